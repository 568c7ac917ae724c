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
rm -rf /tmp/mgpu /tmp/site_* /tmp/sd /tmp/ComfyUI
pip_t() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$1" "${@:2}" 2>&1 | tail -2; }
pip_t /tmp/site_sd $G/whl_sd/*.whl
pip_t /tmp/site_prod $G/whl_prod/*.whl
pip_t /tmp/site_comfy $G/whl_comfy/*.whl
mkdir -p /tmp/site_comfy/comfyui_frontend_package/static
echo '<html><body>headless</body></html>' > /tmp/site_comfy/comfyui_frontend_package/static/index.html
touch /tmp/site_comfy/comfyui_frontend_package/__init__.py
mkdir -p /tmp/sd /tmp/ComfyUI
tar xJf $G/sd.tar.xz -C /tmp/sd --strip-components=1
tar xJf $G/comfy.tar.xz -C /tmp/ComfyUI --strip-components=1
printf '#!/bin/sh\nPYTHONPATH=/tmp/site_sd exec python3 "$@"\n' > /tmp/pysd; chmod +x /tmp/pysd
printf '#!/bin/sh\nPYTHONPATH=/tmp/site_comfy exec python3 "$@"\n' > /tmp/pycomfy; chmod +x /tmp/pycomfy
export PYTHONPATH=/tmp/site_prod:$R PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
P=/tmp/mgpu/proj; mkdir -p $P
cp -r $R/workflows $P/ 2>/dev/null; mkdir -p $P/models/{checkpoints,vae,text_encoders,loras,tokenizers}
WEIGHTS="ae=vae/ae.safetensors clip_l=text_encoders/clip_l.safetensors t5xxl_fp16=text_encoders/t5xxl_fp16.safetensors"
python3 $G/make_weights.py $G/manifest $P/models flux1-dev=checkpoints/flux1-dev.safetensors $WEIGHTS
TC=$P/models/tokenizers/openai_clip-vit-large-patch14; TT=$P/models/tokenizers/google_t5-v1_1-xxl; mkdir -p $TC $TT
cp /tmp/ComfyUI/comfy/sd1_tokenizer/* $TC/; cp /tmp/ComfyUI/comfy/text_encoders/t5_tokenizer/* $TT/
echo "tokenizer.json is used; the Hub repo ships spiece.model" > $TT/spiece.model
python3 $G/make_data.py $P/flux_data >/dev/null
python3 -m orchestrator --project-dir $P dataset init >/dev/null 2>&1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee $FINAL/gpus.txt
python3 $R/bench/multigpu.py --project-dir $P --phase $PHASE --runtime local --sd-scripts /tmp/sd --python /tmp/pysd \
  --comfyui /tmp/ComfyUI --comfy-python /tmp/pycomfy --epochs $EPOCHS --images $IMAGES --steps $STEPS \
  --timeout $TIMEOUT --out $FINAL/results 2>&1 | tee $FINAL/bench.txt
RC=${PIPESTATUS[0]}
for d in $P/runs/*/; do [ -f "$d/train.log" ] && tail -c 2000000 "$d/train.log" > "$FINAL/$(basename "$d").log"; done
cp $P/.comfyui/local/comfyui*.log $FINAL/ 2>/dev/null
exit $RC
