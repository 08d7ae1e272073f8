#!/usr/bin/env bash
# emoji-32 on one GPU in about 9 minutes: pretraining, then two fine-tunes side by side (without
# and with mirror augmentation, so validation says whether mirroring helps) with the per-layer
# linear probes; the added emoji sets' test metrics written into every result; weights-only
# copies small enough to bring back from a lent machine. Run from training/:
#
#   scripts/gpu_emoji_32.sh DATA WORK OUT
#
# DATA: prepared emoji data (igpt/emoji.py; training/README.md, "emoji-32 with four emoji sets"),
# best as the copy scripts/compress_prepared.py writes: the repository is about 53 MiB of the
# 64 MiB a device call may take, the plain .npz files of four sets 29.9 MB, the compressed copy
# 4.0 MB. Put it under training/runs/ (ignored by git) and name that folder in the call's carry.
# WORK: checkpoints with optimizer state (resumable with the same WORK while the machine stays).
# OUT: pretrain.pt, finetuneA.pt (no mirroring), finetuneB.pt (--hflip), probe.json and the
# logs: 8 files, each under the 16 MiB a file may bring back while the model stays under about
# 4M parameters (weights-only fp32 checkpoints; the default 8 x 192 model: 3.95M, 15.1 MiB).
# Environment: PRETRAIN_MIN (5.5), FINETUNE_MIN (2.5), N_LAYER (8), N_EMBD (192), N_HEAD (6),
# DROPOUT (0.1), BATCH (128 images = 131k tokens), LR (1e-3), SMOKE (1: first run every stage
# for a few steps on the same shapes, so a broken set-up fails in seconds, not after
# pretraining), SMOKE_ONLY (1: stop after that), DEVICE (auto), PYTHON (python3).
#
# Sizing: the current emoji-32 (6 x 128, 1.45M parameters) trained at about 5k tokens/s on one
# thread of the development VM; fashion-mnist-28 (8 x 128) pretrained at 2.3-2.9M tokens/s on the
# H200 with this training code, so 5.5 minutes are on the order of 0.7-0.9B tokens, 60-80 passes
# over the 12.1M training tokens of four sets. The smoke stage prints the measured rate; with so
# many passes a wider model with dropout uses the time better than the old 1.45M one, and the
# validation loss in pretrain.log says whether it overfits (lower N_EMBD or raise DROPOUT then).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 DATA WORK OUT" >&2; exit 2; }
DATA=$1 WORK=$2 OUT=$3
PY=${PYTHON:-python3} DEVICE=${DEVICE:-auto} BATCH=${BATCH:-128}
PRETRAIN_MIN=${PRETRAIN_MIN:-5.5} FINETUNE_MIN=${FINETUNE_MIN:-2.5}
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1
HERE=$(cd "$(dirname "$0")" && pwd)  # the scripts, wherever the call runs from

MODEL=(--preset emoji32 --n-layer "${N_LAYER:-8}" --n-embd "${N_EMBD:-192}" --n-head "${N_HEAD:-6}"
       --dropout "${DROPOUT:-0.1}")
FT=(--data "$DATA" --init "$WORK/pretrain/last.pt" --amp --device "$DEVICE" --batch-size 64 --lr 3e-4
    --head-lr 1e-3 --eval-batch-size 256 --val-limit 0 --patience 0 --epochs 30 --head-init-images 4000)

weights_only() {  # pretraining checkpoint without optimizer / RNG state: what the export, soup and card need
  "$PY" "$HERE/weights_only.py" "$1" "$2"
}

added_test() {  # the added emoji sets' test images under their own metric keys, into the checkpoint
  "$PY" "$HERE/emoji_test_added.py" --ckpt "$1" --data "$DATA" --device "$DEVICE" --batch-size 64 --write
}

if [ "${SMOKE:-1}" = 1 ]; then
  S="$WORK/smoke"
  rm -rf "$S"
  "$PY" -m igpt train --data "$DATA" --out "$S/pretrain" "${MODEL[@]}" --batch-size "$BATCH" --amp --device "$DEVICE" \
      --max-steps 20 --warmup-steps 1 --eval-interval 10 --eval-samples 64 --final-eval-samples 64 --no-progress \
      --log-interval 5
  "$PY" -m igpt finetune --data "$DATA" --init "$S/pretrain/last.pt" --out "$S/ft" --amp --device "$DEVICE" \
      --batch-size 64 --max-steps 3 --max-train 256 --val-limit 128 --test-limit 128 --head-init-images 128 \
      --eval-every 2 --eval-batch-size 256 --hflip
  "$PY" -m igpt probe --data "$DATA" --ckpt "$S/pretrain/last.pt" --json "$S/probe.json" --amp --device "$DEVICE" \
      --max-train 256 --max-val 128 --max-test 128 --max-iter 5 --batch-size 256
  weights_only "$S/pretrain/last.pt" "$S/pretrain.pt"
  added_test "$S/ft/best.pt" > /dev/null
  ls -l "$S/pretrain.pt" "$S/ft/best.pt"
  echo "smoke: every stage ran"
  [ "${SMOKE_ONLY:-0}" = 1 ] && exit 0
fi

# Pretraining: cosine to 0.1x over the time budget; validation on 1,000 images every 1,000 steps.
"$PY" -m igpt train --data "$DATA" --out "$WORK/pretrain" "${MODEL[@]}" --batch-size "$BATCH" --lr "${LR:-1e-3}" \
    --warmup-steps 300 --amp --device "$DEVICE" --max-minutes "$PRETRAIN_MIN" --eval-interval 1000 \
    --eval-samples 1000 --final-eval-samples 0 --ckpt-minutes 1 --no-progress --log-interval 250 --resume \
    2>&1 | tee "$OUT/pretrain.log"
weights_only "$WORK/pretrain/last.pt" "$OUT/pretrain.pt"
added_test "$OUT/pretrain.pt"

# L_CLF + 0.5 L_GEN from the pretrained model, without and with mirroring; pick by validation later.
finetune() {  # NAME [options]: one fine-tune in the background, its log in OUT/NAME.log
  "$PY" -m igpt finetune "${FT[@]}" --out "$WORK/$1" --seed 1 --max-minutes "$FINETUNE_MIN" --eval-every 100 \
      "${@:2}" > "$OUT/$1.log" 2>&1 &
}
declare -A RUNS
finetune finetuneA
RUNS[finetuneA]=$!
finetune finetuneB --hflip
RUNS[finetuneB]=$!
"$PY" -m igpt probe --data "$DATA" --ckpt "$WORK/pretrain/last.pt" --json "$OUT/probe.json" --amp \
    --device "$DEVICE" --batch-size 256 > "$OUT/probe.log" 2>&1 &
PROBE=$!
rc=0
for name in finetuneA finetuneB; do  # finetune's best.pt holds no optimizer state
  { wait "${RUNS[$name]}" && cp "$WORK/$name/best.pt" "$OUT/$name.pt" && added_test "$OUT/$name.pt"; } || rc=1
done
wait $PROBE || rc=1
tail -n 25 "$OUT/finetuneA.log" "$OUT/finetuneB.log" "$OUT/probe.log"
ls -l "$OUT"
exit $rc
