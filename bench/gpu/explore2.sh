#!/bin/bash
# Device side, one call: training profiles (bench/train_gpu.py) then inference modes (bench/inference_gpu.py).
set -u
OUTD=${OUT:-/tmp/out}; mkdir -p $OUTD
bash bench/gpu/setup.sh 2>&1 | tail -3 || exit 1
. /tmp/kit.env
timeout 260 python3 bench/train_gpu.py --project-dir /tmp/proj --sd-scripts /tmp/sd --python /tmp/pysd \
  --out-dir /tmp/bench_out --json $OUTD/train.json --profile 3:9 --timeout 150 \
  --variant 'p512:resolution=512,max_train_epochs=2,save_every_n_epochs=2,sample_every_n_epochs=2,gradient_checkpointing=false' \
  --variant 'p1024nonorm:skip_grad_norms=1,max_train_epochs=2,save_every_n_epochs=1,sample_every_n_epochs=1,gradient_checkpointing=false' \
  2>&1 | tail -4
(cd /tmp/bench_out && tar czf $OUTD/train_logs.tgz *.log *.txt)
L=$(ls -t /tmp/proj/models/loras/ | grep -v copy | head -1); L=${L%.safetensors}; echo "LoRA for inference: $L"
timeout 300 python3 bench/inference_gpu.py --project-dir /tmp/proj --comfyui /tmp/ComfyUI --python /tmp/pycomfy \
  --lora "$L" --images 4 --json $OUTD/inference.json --out-dir /tmp/inf_out \
  --mode 'hvlru:--highvram,--cache-lru,8+lora' --mode 'fp8:--highvram,--fast,fp8_matrix_mult,--fp8_e4m3fn-unet' \
  --mode 'fp8:--highvram,--fast,fp8_matrix_mult,--fp8_e4m3fn-unet+easycache' 2>&1 | tail -6
(cd /tmp/inf_out && tar czf $OUTD/inf_logs.tgz *.log *.json 2>/dev/null)
ls -la $OUTD
