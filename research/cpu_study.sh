#!/usr/bin/env bash
# The CPU-sized studies of issue #23, in the background on 2 cores (about 2 hours): XUNet against BasicUNet on the
# LGG slices (3 folds of patients x 3 seeds, then the seed's leaky slice split), the family on LGG (fold 0, 2 seeds)
# and on the hippocampus (fold 0, 2 seeds). Sizes are chosen for 2 CPU cores; the full-size commands are in
# research/README.md. Usage: bash research/cpu_study.sh <kaggle_3m folder> <MSD Task04 folder> <work dir>
set -euo pipefail
lgg=$1
msd=$2
work=$3
python=${PYTHON:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
lgg_budget=(--num_folds 3 --max_epochs 6 --features "[8,8,16,32,64,8]" --patch_size "[128,128]" --num_workers 0)
family="['unet','unetpp','attentionunet','r2unet','r2attunet','resunet','xunet_attn','xunet_light']"
mkdir -p "$work"
(
    $python -m research.lgg_study run --dataset_dir "$lgg" --work_dir "$work/lgg" --folds "[0,1,2]" \
        --seeds "[0,1,2]" "${lgg_budget[@]}"
    $python -m research.lgg_study run --dataset_dir "$lgg" --work_dir "$work/lgg" --folds "[0]" --seeds "[0,1,2]" \
        --leaky True "${lgg_budget[@]}"
) > "$work/lgg_main.log" 2>&1 &
$python -m research.lgg_study run --dataset_dir "$lgg" --work_dir "$work/lgg" --networks "$family" --folds "[0]" \
    --seeds "[0,1]" "${lgg_budget[@]}" > "$work/lgg_family.log" 2>&1 &
wait
$python -m research.screen_recipes research/configs/screens/family_cpu.json --folds "[0]" --dataset_dir "$msd" \
    --work_dir "$work/hippocampus" --max_parallel 2 --budget_s 14400 --data_limit 48 \
    --train#trainer#max_epochs 10 --num_workers 0 --class_names "['anterior','posterior']" \
    > "$work/hippocampus.log" 2>&1
echo "done" >> "$work/hippocampus.log"
