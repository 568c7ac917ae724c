#!/bin/sh
# Stand-in for `accelerate launch [launcher args] flux_train_network.py [trainer args]` (tests only).
# Prints sd-scripts-format output on the right streams (logger + tqdm on stderr, print() on stdout),
# writes LoRA / state / sample files into --output_dir with sd-scripts' names, honours --resume.
# Misbehaves on demand: STANDIN_MODE env, a word containing `standin:MODE` in the argv, or
# `standin:MODE` anywhere in the --dataset_config file. MODE: ok fail oom hostoom argparse config
# nodata hang hang-hard (hang-hard ignores SIGINT; both hang at the first step of epoch STANDIN_HANG_EPOCH,
# default 1). STANDIN_STEP_SLEEP=seconds slows each step; STANDIN_WAIT_FOR=NAME holds the first step until
# the file NAME exists in --output_dir.
set -u
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') INFO     $*" >&2; }
logerr() { echo "$(date '+%Y-%m-%d %H:%M:%S') ERROR    $*" >&2; }
pad6() { printf '%06d' "$1"; }

if [ "${1:-}" != launch ]; then
  echo "usage: accelerate <command> [<args>]" >&2
  exit 1
fi
shift
script=""
while [ $# -gt 0 ]; do
  case "$1" in
    *.py) script="$1"; shift; break ;;
    --*=*|--multi_gpu|--cpu|-m|--module) shift ;;
    --*) shift; case "${1:-}" in --*|*.py|"") ;; *) shift ;; esac ;;
    *) shift ;;
  esac
done
if [ -z "$script" ] || [ ! -f "$script" ]; then
  echo "python: can't open file '$PWD/$script': [Errno 2] No such file or directory" >&2
  echo "subprocess.CalledProcessError: Command '['python', '$script']' returned non-zero exit status 2." >&2
  exit 1
fi

mode="${STANDIN_MODE:-ok}"
output_dir="" output_name="" epochs="" max_steps=1600 save_every=0 save_state=0 resume=""
sample_every=0 sample_prompts="" sample_first=0 dataset_config="" accum=1 ext=safetensors
for w in "$@"; do
  case "$w" in *standin:*) mode=$(echo "$w" | sed -n 's/.*standin:\([a-z-]*\).*/\1/p') ;; esac
done
while [ $# -gt 0 ]; do
  a="$1"; shift
  case "$a" in
    --*=*) key="${a%%=*}"; val="${a#*=}" ;;
    --*) key="$a"; val=""
         if [ $# -gt 0 ]; then case "$1" in --*) ;; *) val="$1"; shift ;; esac; fi ;;
    *) continue ;;
  esac
  case "$key" in
    --output_dir) output_dir="$val" ;;
    --output_name) output_name="$val" ;;
    --max_train_epochs) epochs="$val" ;;
    --max_train_steps) max_steps="$val" ;;
    --save_every_n_epochs) save_every="$val" ;;
    --save_state) save_state=1 ;;
    --resume) resume="$val" ;;
    --sample_every_n_epochs) sample_every="$val" ;;
    --sample_prompts) sample_prompts="$val" ;;
    --sample_at_first) sample_first=1 ;;
    --dataset_config) dataset_config="$val" ;;
    --gradient_accumulation_steps) accum="$val" ;;
    --save_model_as) ext="$val" ;;
  esac
done
if [ -n "$dataset_config" ] && [ -f "$dataset_config" ] && grep -q 'standin:' "$dataset_config"; then
  mode=$(sed -n 's/.*standin:\([a-z-]*\).*/\1/p' "$dataset_config" | head -n 1)
fi
called_process_error() {
  echo "subprocess.CalledProcessError: Command '['/usr/bin/python', '$script', '--output_dir', '$output_dir']' returned non-zero exit status $1." >&2
}

[ "$mode" = hang-hard ] && trap '' INT   # from the start: only SIGKILL ends it
case "$mode" in
  argparse)
    echo "usage: $script [-h] [--console_log_level {DEBUG,INFO,WARNING,ERROR,CRITICAL}]" >&2
    echo "$script: error: unrecognized arguments: --standin_bogus" >&2
    called_process_error 2; exit 1 ;;
esac

log "Loading dataset config from $dataset_config"
if [ -z "$dataset_config" ] || [ ! -f "$dataset_config" ]; then
  echo "Traceback (most recent call last):" >&2
  echo "FileNotFoundError: [Errno 2] No such file or directory: '$dataset_config'" >&2
  called_process_error 1; exit 1
fi
if [ "$mode" = config ]; then
  logerr "Invalid user config / 不正なユーザー設定です"
  echo "Traceback (most recent call last):" >&2
  echo "voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['subsets'][0]['standin']" >&2
  called_process_error 1; exit 1
fi
batch=$(sed -n 's/^[[:space:]]*batch_size[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$dataset_config" | head -n 1)
batch=${batch:-1}
subsets=$(awk '
  /^[ \t]*\[/ { if (dir != "") print rep " " dir; dir = ""; rep = 1 }
  /^[ \t]*image_dir[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*["\047]/, "", v); sub(/["\047].*$/, "", v); dir = v }
  /^[ \t]*num_repeats[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*/, "", v); rep = v + 0 }
  END { if (dir != "") print rep " " dir }' "$dataset_config")
n=0
echo "$subsets" | { while read -r rep dir; do [ -n "$dir" ] && echo "$rep $dir"; done; } > /tmp/standin-subsets.$$
while read -r rep dir; do
  if [ -d "$dir" ]; then
    c=$(ls "$dir" | grep -ciE '\.(png|jpe?g|webp|bmp)$')
    log "found directory $dir contains $c image files"
    n=$((n + c * rep))
  else
    echo "$(date '+%Y-%m-%d %H:%M:%S') WARNING  not directory: $dir" >&2
  fi
done < /tmp/standin-subsets.$$
rm -f /tmp/standin-subsets.$$
log "$n train images with repeats."
if [ "$n" -eq 0 ] || [ "$mode" = nodata ]; then
  logerr "No data found. Please verify arguments (train_data_dir must be the parent of folders with images) / 画像がありません。引数指定を確認してください"
  exit 0
fi
batches=$(( (n + batch - 1) / batch ))
spe=$(( (batches + accum - 1) / accum ))
[ -n "$epochs" ] || epochs=$(( (max_steps + spe - 1) / spe ))
total=$((epochs * spe))

echo "accelerator device: cuda:0"
log "Building Flux model dev from BFL checkpoint"
if [ "$mode" = hostoom ]; then
  echo "subprocess.CalledProcessError: Command '['/usr/bin/python', '$script']' died with <Signals.SIGKILL: 9>." >&2
  exit 1
fi
log "Loaded Flux: <All keys matched successfully>"
log "caching latents with caching strategy."
printf '\r  0%%|          | 0/%d [00:00<?, ?it/s]' "$n" >&2
printf '\r100%%|##########| %d/%d [00:00<00:00, 50.00it/s]\n' "$n" "$n" >&2
log "caching Text Encoder outputs with caching strategy."
printf '\r100%%|##########| %d/%d [00:00<00:00, 40.00it/s]\n' "$n" "$n" >&2
echo "import network module: networks.lora_flux"
log "create LoRA network. base dim (rank): 16, alpha: 16.0"

start_epoch=1 start_step=0
if [ -n "$resume" ]; then
  if [ ! -f "$resume/train_state.json" ]; then
    echo "Traceback (most recent call last):" >&2
    echo "FileNotFoundError: [Errno 2] No such file or directory: '$resume/train_state.json'" >&2
    called_process_error 1; exit 1
  fi
  log "resume training from local state: $resume"
  start_step=$(sed -n 's/.*"current_step": *\([0-9]*\).*/\1/p' "$resume/train_state.json")
  start_epoch=$((start_step / spe + 1))
fi
bar_total=$((total - start_step))
echo "running training / 学習開始"
echo "  num train images * repeats / 学習画像の数×繰り返し回数: $n"
echo "  num reg images / 正則化画像の数: 0"
echo "  num batches per epoch / 1epochのバッチ数: $batches"
echo "  num epochs / epoch数: $epochs"
echo "  batch size per device / バッチサイズ: $batch"
echo "  gradient accumulation steps / 勾配を合計するステップ数 = $accum"
echo "  total optimization steps / 学習ステップ数: $total"
printf '\rsteps:   0%%|          | 0/%d [00:00<?, ?it/s]' "$bar_total" >&2
mkdir -p "$output_dir"

write_png() {
  printf '\211\120\116\107\015\012\032\012\000\000\000\015\111\110\104\122\000\000\000\004\000\000\000\004\010\002\000\000\000\046\223\011\051\000\000\000\020\111\104\101\124\170\234\143\070\121\241\001\107\014\304\161\000\123\122\026\201\031\252\016\317\000\000\000\000\111\105\116\104\256\102\140\202' > "$1"
}
samples() {  # samples EPOCH STEP
  log "generating sample images at step / サンプル画像生成 ステップ: $2"
  if [ ! -f "$sample_prompts" ]; then logerr "No prompt file / プロンプトファイルがありません: $sample_prompts"; return; fi
  mkdir -p "$output_dir/sample"
  i=0
  grep -v '^#' "$sample_prompts" | grep -v '^[[:space:]]*$' > /tmp/standin-prompts.$$ || true
  while read -r prompt; do
    log "prompt: $prompt"
    write_png "$output_dir/sample/${output_name}_e$(pad6 "$1")_$(printf %02d $i)_$(date +%Y%m%d%H%M%S)_42.png"
    i=$((i + 1))
  done < /tmp/standin-prompts.$$
  rm -f /tmp/standin-prompts.$$
}
save_state_dir() {  # save_state_dir DIR EPOCH STEP
  mkdir -p "$1"
  printf '{"current_epoch": %d, "current_step": %d}\n' "$2" "$3" > "$1/train_state.json"
  echo "standin state" > "$1/model.safetensors"
}
hang() {
  if [ "$mode" = hang-hard ]; then trap '' INT; else trap 'echo "KeyboardInterrupt" >&2; exit 130' INT TERM; fi
  while :; do sleep 1 & wait $!; done
}

[ "$sample_first" = 1 ] && [ -n "$sample_prompts" ] && samples 0 0
if [ -n "${STANDIN_WAIT_FOR:-}" ]; then  # a test's gate: no step before $output_dir/NAME exists (60 s at most)
  n=0
  while [ ! -e "$output_dir/$STANDIN_WAIT_FOR" ] && [ "$n" -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
fi
k=0
step=$start_step
e=$start_epoch
while [ "$e" -le "$epochs" ]; do
  printf '\nepoch %d/%d\n\n' "$e" "$epochs"
  j=0
  while [ "$j" -lt "$spe" ]; do
    if [ "$mode" = oom ]; then
      echo "Traceback (most recent call last):" >&2
      echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 23.55 GiB of which 1.02 GiB is free." >&2
      called_process_error 1; exit 1
    fi
    [ -n "${STANDIN_STEP_SLEEP:-}" ] && sleep "$STANDIN_STEP_SLEEP"
    j=$((j + 1)); k=$((k + 1)); step=$((step + 1))
    loss=$(awk -v s="$step" 'BEGIN { printf "%.4f", 0.5 / (1 + 0.1 * s) }')
    pct=$((100 * k / bar_total))
    left=$((bar_total - k))
    printf '\rsteps: %3d%%|#         | %d/%d [00:%02d<00:%02d,  1.00s/it, avr_loss=%s]' \
      "$pct" "$k" "$bar_total" "$((k % 60))" "$((left % 60))" "$loss" >&2
    if [ "$mode" = fail ]; then
      echo "" >&2
      echo "Traceback (most recent call last):" >&2
      echo "  File \"/opt/sd-scripts/train_network.py\", line 1400, in train" >&2
      echo "RuntimeError: stand-in failure (asked for with standin:fail)" >&2
      called_process_error 1; exit 1
    fi
    case "$mode" in hang|hang-hard) [ "$e" -ge "${STANDIN_HANG_EPOCH:-1}" ] && hang ;; esac
  done
  if [ "$e" -lt "$epochs" ] && [ "$save_every" -gt 0 ] && [ $((e % save_every)) -eq 0 ]; then
    f="$output_dir/$output_name-$(pad6 "$e").$ext"
    printf '\nsaving checkpoint: %s\n' "$f"
    printf 'standin lora epoch %d step %d\n' "$e" "$step" > "$f"
    if [ "$save_state" = 1 ]; then
      log "saving state at epoch $e"
      save_state_dir "$output_dir/$output_name-$(pad6 "$e")-state" "$e" "$step"
    fi
  fi
  if [ "$sample_every" -gt 0 ] && [ $((e % sample_every)) -eq 0 ] && [ -n "$sample_prompts" ]; then
    samples "$e" "$step"
  fi
  e=$((e + 1))
done
echo "" >&2
f="$output_dir/$output_name.$ext"
printf '\nsaving checkpoint: %s\n' "$f"
printf 'standin lora final step %d\n' "$step" > "$f"
if [ "$save_state" = 1 ]; then
  log "saving last state."
  save_state_dir "$output_dir/$output_name-state" "$epochs" "$step"
fi
log "model saved."
exit 0
