#!/bin/bash
# Device side, with the GPU kit (../shared/gpu/README.md): bench/multigpu.py on a host with >= 2 GPUs,
# --runtime local, random full-size FLUX.1-dev weights, the kit's 13-image dataset.
# From the project root, after ../shared/gpu/pack.sh: run with carry [".gpu"] on nvidia-h200-x2 and e.g.
#   PHASE=train EPOCHS=2 bash bench/multigpu_kit.sh      # ~8 min: two training runs (1 GPU, 2 GPUs)
#   PHASE=comfy IMAGES=40 bash bench/multigpu_kit.sh     # ~8 min: 1 worker, then 2 workers, 40 images each
# (20 sampling steps by default here, STEPS=28 for the product default, so a phase fits one 10-minute call)
# (/tmp does not survive between calls, so each call sets up again: ~1.5 min.) The results file comes back in
# $OUT/results/; commit it as bench/results/multigpu-<gpu>.json: the next phase merges its figures into the
# committed file (it travels with the checkout). TIMEOUT caps each training run / batch run (seconds).
set -u
R=$(pwd); G=$R/.gpu
PHASE=${PHASE:-train}; EPOCHS=${EPOCHS:-2}; IMAGES=${IMAGES:-40}; STEPS=${STEPS:-20}; TIMEOUT=${TIMEOUT:-250}
FINAL=${OUT:-/tmp/out}; mkdir -p "$FINAL/results"
cp "$R"/bench/results/multigpu-*.json "$FINAL/results/" 2>/dev/null   # an earlier phase's figures: merged into
[ -d "$G" ] || { echo "error: $G is missing: run ../shared/gpu/pack.sh first and carry .gpu" >&2; exit 2; }
bash "$R/bench/gpu/setup.sh" || exit 1   # wheels, sd-scripts, ComfyUI, weights, tokenizers, dataset in /tmp/proj
. /tmp/kit.env
P=/tmp/proj
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee $FINAL/gpus.txt
python3 $R/bench/multigpu.py --project-dir $P --phase $PHASE --runtime local --sd-scripts /tmp/sd --python /tmp/pysd \
  --comfyui /tmp/ComfyUI --comfy-python /tmp/pycomfy --epochs $EPOCHS --images $IMAGES --steps $STEPS \
  --timeout $TIMEOUT --out $FINAL/results 2>&1 | tee $FINAL/bench.txt
RC=${PIPESTATUS[0]}
for d in $P/runs/*/; do [ -f "$d/train.log" ] && tail -c 2000000 "$d/train.log" > "$FINAL/$(basename "$d").log"; done
cp $P/.comfyui/local/comfyui*.log $FINAL/ 2>/dev/null
exit $RC
