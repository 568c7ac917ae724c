#!/bin/bash
# Device side of a GPU measurement: lays out what ../shared/gpu/pack.sh packed into .gpu/ (wheels,
# sd-scripts, ComfyUI, the weight manifests) as a ready project in /tmp/proj with random full-size
# FLUX.1-dev weights, tokenizers and the kit's 13-image dataset. Then source /tmp/kit.env.
set -eu
R=$(pwd); G=$R/.gpu; T0=$(date +%s)
rm -rf /tmp/site_* /tmp/sd /tmp/ComfyUI /tmp/proj
pip_t() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$1" "${@:2}" 2>&1 | tail -2; }
pip_t /tmp/site_sd $G/whl_sd/*.whl
pip_t /tmp/site_prod $G/whl_prod/*.whl
pip_t /tmp/site_comfy $G/whl_comfy/*.whl
[ -d $G/whl_extra ] && pip_t /tmp/site_prod $G/whl_extra/*.whl
mkdir -p /tmp/site_comfy/comfyui_frontend_package/static
echo '<html><body>headless</body></html>' > /tmp/site_comfy/comfyui_frontend_package/static/index.html
touch /tmp/site_comfy/comfyui_frontend_package/__init__.py
mkdir -p /tmp/sd /tmp/ComfyUI
tar xJf $G/sd.tar.xz -C /tmp/sd --strip-components=1
tar xJf $G/comfy.tar.xz -C /tmp/ComfyUI --strip-components=1
printf '#!/bin/sh\nPYTHONPATH=/tmp/site_sd${PYTHONPATH:+:$PYTHONPATH} exec python3 "$@"\n' > /tmp/pysd; chmod +x /tmp/pysd
printf '#!/bin/sh\nPYTHONPATH=/tmp/site_comfy exec python3 "$@"\n' > /tmp/pycomfy; chmod +x /tmp/pycomfy
P=/tmp/proj; mkdir -p $P
cp -r $R/models $R/workflows $P/ 2>/dev/null || true
mkdir -p $P/models/{checkpoints,vae,text_encoders,loras,tokenizers}
python3 $G/make_weights.py $G/manifest $P/models flux1-dev=checkpoints/flux1-dev.safetensors ae=vae/ae.safetensors \
  clip_l=text_encoders/clip_l.safetensors t5xxl_fp16=text_encoders/t5xxl_fp16.safetensors >/dev/null
TC=$P/models/tokenizers/openai_clip-vit-large-patch14; TT=$P/models/tokenizers/google_t5-v1_1-xxl; mkdir -p $TC $TT
cp /tmp/ComfyUI/comfy/sd1_tokenizer/* $TC/; cp /tmp/ComfyUI/comfy/text_encoders/t5_tokenizer/* $TT/
echo "tokenizer.json is used; the Hub repo ships spiece.model" > $TT/spiece.model
python3 $G/make_data.py $P/flux_data >/dev/null
cat > /tmp/kit.env <<ENV
export PYTHONPATH=/tmp/site_prod:$R PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SD_SCRIPTS_COMMIT=48d368fa557731ad0488c07304dfeba8c07910eb FLUXO_COMMIT=$(cat $G/commit.txt 2>/dev/null)
ORC="python3 -m orchestrator --project-dir $P"
LOC="--runtime local --sd-scripts /tmp/sd --python /tmp/pysd"
ENV
. /tmp/kit.env
$ORC dataset init >/dev/null 2>&1 || echo "dataset init failed"
echo "[setup] ready in $(( $(date +%s) - T0 )) s: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
