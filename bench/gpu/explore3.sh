#!/bin/bash
# Device side, one call: two training hypotheses for the per-step overhead (the optimizer, the LoRA
# grad-norm pass), then the LoRA switch / strength / key check in ComfyUI.
set -u
OUTD=${OUT:-/tmp/out}; mkdir -p $OUTD /tmp/bench_out /tmp/inf_out
bash bench/gpu/setup.sh 2>&1 | tail -3 || exit 1
. /tmp/kit.env
C='max_train_epochs=2,save_every_n_epochs=2,sample_every_n_epochs=2,gradient_checkpointing=false'
timeout 290 python3 bench/train_gpu.py --project-dir /tmp/proj --sd-scripts /tmp/sd --python /tmp/pysd \
  --out-dir /tmp/bench_out --json $OUTD/train.json --timeout 140 \
  --variant "adamw:$C,optimizer_type=AdamW,learning_rate=0.0001,optimizer_args={fused: true}" \
  --variant "nonorm:skip_grad_norms=1,$C" 2>&1 | tail -4
(cd /tmp/bench_out && tar czf $OUTD/train_logs.tgz *)
L=$(ls -t /tmp/proj/models/loras/ | grep -v copy | head -1); L=${L%.safetensors}; echo "LoRA for inference: $L"
timeout 110 python3 bench/inference_gpu.py --project-dir /tmp/proj --comfyui /tmp/ComfyUI --python /tmp/pycomfy \
  --lora "$L" --images 2 --json $OUTD/inference.json --out-dir /tmp/inf_out \
  --mode 'hvlru:--highvram,--cache-lru,8+lora' 2>&1 | tail -4
(cd /tmp/inf_out && tar czf $OUTD/inf_logs.tgz *.log *.json 2>/dev/null)
ls -la $OUTD
