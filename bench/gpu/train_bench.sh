#!/bin/bash
# Device side: set up the GPU kit (bench/gpu/setup.sh), then bench/train_gpu.py with the variants
# given as arguments; results, logs and profiles go to $OUT (or /tmp/out).
#   bash bench/gpu/train_bench.sh --profile 24:10 --variant 'default:max_train_epochs=2' ...
set -u
OUTD=${OUT:-/tmp/out}; mkdir -p $OUTD
bash bench/gpu/setup.sh 2>&1 | tail -5 || exit 1
. /tmp/kit.env
nvidia-smi --query-gpu=timestamp,utilization.gpu,power.draw,memory.used --format=csv,noheader -lms 500 > /tmp/smi.csv 2>&1 & SMI=$!
python3 bench/train_gpu.py --project-dir /tmp/proj --sd-scripts /tmp/sd --python /tmp/pysd \
  --out-dir /tmp/bench_out --json $OUTD/train.json "$@"
RC=$?
kill $SMI 2>/dev/null
# small things back: logs, profiles, the trainer's raw output of the first run (a test fixture)
cd /tmp/bench_out && tar czf $OUTD/logs.tgz *.log *.txt /tmp/smi.csv 2>/dev/null
f=$(ls -t /tmp/proj/runs/*/train.log 2>/dev/null | tail -1); [ -n "$f" ] && cp "$f" $OUTD/trainer_raw.log
ls -la $OUTD
exit $RC
