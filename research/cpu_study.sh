#!/usr/bin/env bash
# The CPU-sized studies of issue #23, in the background on 2 cores (about 2 hours): XUNet against BasicUNet on the
# LGG slices (2 folds of patients x 3 seeds, then the seed's leaky slice split with 2 seeds), the family on LGG
# (fold 0, 2 seeds) and on the hippocampus (fold 0, 2 seeds). Sizes are chosen for 2 CPU cores; the full-size
# commands are in research/results/README.md.
# Usage: bash research/cpu_study.sh <kaggle_3m folder> <MSD Task04 folder> <work dir>
set -euo pipefail
lgg=$1
msd=$2
work=$3
python=${PYTHON:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
lgg_budget=(--num_folds 2 --max_epochs 6 --features "[8,8,16,32,64,8]" --patch_size "[128,128]" --num_workers 0)
family="['unet','unetpp','attentionunet','r2unet','r2attunet','resunet','xunet_attn','xunet_light']"
hippocampus() {  # the family on the hippocampus, fold 0, one seed's variants (research/configs/screens/family_cpu.json)
    $python -m research.screen_recipes research/configs/screens/family_cpu.json --folds "[0]" --dataset_dir "$msd" \
        --work_dir "$work/hippocampus" --results_dir "$work/hippocampus/results" --max_parallel 1 --budget_s 14400 \
        --data_limit 24 --train#trainer#max_epochs 5 --num_workers 0 --class_names "['anterior','posterior']" \
        --only "$1"
}
seed0="['basicunet_s0','xunet_s0','unet_s0','unetpp_s0','attentionunet_s0','r2unet_s0','r2attunet_s0','resunet_s0',"
seed0+="'xunet_attn_s0','xunet_light_s0']"
mkdir -p "$work"
(
    $python -m research.lgg_study run --dataset_dir "$lgg" --work_dir "$work/lgg" --folds "[0,1]" \
        --seeds "[0,1,2]" "${lgg_budget[@]}"
    $python -m research.lgg_study run --dataset_dir "$lgg" --work_dir "$work/lgg" --folds "[0]" --seeds "[0,1]" \
        --leaky True "${lgg_budget[@]}"
    hippocampus "$seed0"
) > "$work/stream_a.log" 2>&1 &
stream_a=$!
(
    $python -m research.lgg_study run --dataset_dir "$lgg" --work_dir "$work/lgg" --networks "$family" --folds "[0]" \
        --seeds "[0,1]" "${lgg_budget[@]}"
    hippocampus "${seed0//_s0/_s1}"
) > "$work/stream_b.log" 2>&1 &
stream_b=$!
wait $stream_a
wait $stream_b
echo "done" >> "$work/stream_a.log"
