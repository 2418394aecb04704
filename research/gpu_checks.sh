#!/usr/bin/env bash
# The GPU half of issue #24 in one run (planned for about 10 minutes on one GPU): XUNet's fast path against
# BasicUNet (same features) with passes alternating in one process, in CUDA float32 and bfloat16 autocast; the
# bundle's training epoch and per-volume sliding-window inference; both networks compiled at the bundle's patch.
# Each table goes to <out dir> (Markdown and JSON, 8 files) when it is finished, so a run stopped part-way keeps
# what it measured.
# Usage: bash research/gpu_checks.sh <MSD Task04 folder> <out dir>
set -euo pipefail
msd=$1
out=$2
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
paired() {  # name, then the paired options
    local name=$1
    shift
    $python -m research.benchmark paired --device cuda --out_md "$out/$name.md" --out_json "$out/$name.json" "$@"
}
$python -c "import torch, monai; print(torch.__version__, monai.__version__, torch.cuda.get_device_name())"
paired paired_cuda_float32 --pairs 20
paired paired_cuda_bfloat16 --pairs 20 --precision bfloat16
$python -m research.benchmark bundle --rounds 1 --dataset_dir "$msd" --out_md "$out/bundle_epoch_cuda.md" \
    --out_json "$out/bundle_epoch_cuda.json"
paired paired_cuda_compiled --pairs 10 --settings "['bundle']" --compiled True  # last: compiling takes minutes
