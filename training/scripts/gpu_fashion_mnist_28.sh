#!/usr/bin/env bash
# fashion-mnist-28 on one GPU in about 9 minutes: pretraining, then two fine-tunes side by side
# with the per-layer linear probes, and weights-only copies of the results (small enough to bring
# back from a lent machine). Run from training/:
#
#   scripts/gpu_fashion_mnist_28.sh DATA WORK OUT
#
# DATA: `python3 -m igpt prepare --height 28 --width 28 --palette-size 16 --val 5000` output.
# WORK: checkpoints with optimizer state (resumable). OUT: pretrain.pt, finetuneA.pt, finetuneB.pt
# (weights and metrics only), probe.json, and the logs: 8 files.
# Environment: PRETRAIN_MIN (4.5), FINETUNE_MIN (2.6), SMOKE (1: first run every stage for a few
# steps on the same shapes, so a broken set-up fails in seconds, not after pretraining),
# SMOKE_ONLY (1: stop after that), DEVICE (auto), PYTHON (python3).
set -euo pipefail
DATA=${1:?DATA}
WORK=${2:?WORK}
OUT=${3:?OUT}
PY=${PYTHON:-python3}
PRETRAIN_MIN=${PRETRAIN_MIN:-4.5}
FINETUNE_MIN=${FINETUNE_MIN:-2.6}
DEVICE=${DEVICE:-auto}
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1

MODEL=(--preset fashion-mnist --n-layer 8 --n-embd 128 --n-head 4)
FT=(--data "$DATA" --init "$WORK/pretrain/last.pt" --amp --device "$DEVICE" --batch-size 64 --head-lr 1e-3
    --eval-batch-size 500 --val-limit 0 --patience 0)

weights_only() {  # pretraining checkpoint without optimizer / RNG state: what the export, soup and card need
  "$PY" "$(dirname "$0")/weights_only.py" "$1" "$2"
}

if [ "${SMOKE:-1}" = 1 ]; then
  S="$WORK/smoke"
  rm -rf "$S"
  "$PY" -m igpt train --data "$DATA" --out "$S/pretrain" "${MODEL[@]}" --batch-size 128 --amp --device "$DEVICE" \
      --max-steps 3 --warmup-steps 1 --eval-interval 2 --eval-samples 64 --final-eval-samples 64 --no-progress
  "$PY" -m igpt finetune --data "$DATA" --init "$S/pretrain/last.pt" --out "$S/ft" --amp --device "$DEVICE" \
      --batch-size 64 --max-steps 3 --max-train 256 --val-limit 128 --test-limit 128 --head-init-images 128 \
      --eval-every 2 --eval-batch-size 500
  "$PY" -m igpt probe --data "$DATA" --ckpt "$S/pretrain/last.pt" --json "$S/probe.json" --amp --device "$DEVICE" \
      --max-train 256 --max-val 128 --max-test 128 --max-iter 5 --batch-size 256
  weights_only "$S/pretrain/last.pt" "$S/pretrain.pt"
  echo "smoke: every stage ran"
  [ "${SMOKE_ONLY:-0}" = 1 ] && exit 0
fi

# Pretraining: batch 128 images (100k tokens), cosine to 0.1x over the time budget.
"$PY" -m igpt train --data "$DATA" --out "$WORK/pretrain" "${MODEL[@]}" --batch-size 128 --lr 1.5e-3 \
    --warmup-steps 400 --amp --device "$DEVICE" --max-minutes "$PRETRAIN_MIN" --eval-interval 1500 \
    --eval-samples 5000 --final-eval-samples 0 --ckpt-minutes 1 --no-progress --log-interval 500 --resume \
    2>&1 | tee "$OUT/pretrain.log"
weights_only "$WORK/pretrain/last.pt" "$OUT/pretrain.pt"

# Two fine-tunes (learning rate and seed differ) and the probes share the GPU; soup or pick by val later.
"$PY" -m igpt finetune "${FT[@]}" --out "$WORK/finetuneA" --lr 3e-4 --seed 1 --epochs 12 \
    --max-minutes "$FINETUNE_MIN" --eval-every 430 > "$OUT/finetuneA.log" 2>&1 &
A=$!
"$PY" -m igpt finetune "${FT[@]}" --out "$WORK/finetuneB" --lr 5e-4 --seed 2 --epochs 12 \
    --max-minutes "$FINETUNE_MIN" --eval-every 430 > "$OUT/finetuneB.log" 2>&1 &
B=$!
"$PY" -m igpt probe --data "$DATA" --ckpt "$WORK/pretrain/last.pt" --json "$OUT/probe.json" --amp \
    --device "$DEVICE" --batch-size 256 > "$OUT/probe.log" 2>&1 &
P=$!
rc=0
wait $A || rc=1
cp "$WORK/finetuneA/best.pt" "$OUT/finetuneA.pt" || rc=1  # finetune's best.pt holds no optimizer state
wait $B || rc=1
cp "$WORK/finetuneB/best.pt" "$OUT/finetuneB.pt" || rc=1
wait $P || rc=1
tail -n 25 "$OUT/finetuneA.log" "$OUT/finetuneB.log" "$OUT/probe.log"
exit $rc
