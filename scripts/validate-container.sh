#!/usr/bin/env bash
# Checks, without Docker, the application the Dockerfile builds: publishes src/IGpt.Api with the
# Dockerfile's publish command, lays the folder out as the image does (appsettings.json and models/
# beside the app), starts it from there (outside the repository, so no IGpt.Api.sln is found and the
# publish folder is the service root, as /app is in the container) on the CPU provider with the tiny
# test package mounted through Inference__ModelsPath, then checks /health/live, /health/ready,
# /v1/models, one sample and one completion, and stops it. Exits non-zero on the first failure.
#
#   scripts/validate-container.sh                 # publish to /tmp/igpt-publish, serve on 127.0.0.1:5099
#   PUBLISH_DIR=/tmp/x PORT=5100 scripts/validate-container.sh
#   SKIP_PUBLISH=1 scripts/validate-container.sh  # reuse an existing publish folder
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PUBLISH_DIR=${PUBLISH_DIR:-/tmp/igpt-publish}
PORT=${PORT:-5099}
BASE="http://127.0.0.1:${PORT}"
PACKAGE=${PACKAGE:-$REPO/tests/fixtures/tiny-package}
WORK=$(mktemp -d /tmp/igpt-validate.XXXXXX)
LOG="$WORK/service.log"
PID=""

say() { printf '== %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  if [ -f "$LOG" ]; then printf -- '--- service log (last 40 lines) ---\n' >&2; tail -n 40 "$LOG" >&2; fi
  exit 1
}
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in dotnet curl jq; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required"
done
[ -f "$PACKAGE/model.json" ] || fail "no model package at $PACKAGE"

# 1. Publish exactly as the Dockerfile's build stage does: from a copy of what the build stage copies
#    (the .dockerignore allow-list: Directory.*.props and src/ without bin/obj), restore + publish
#    linux-x64 without an apphost. Building the copy also keeps the checkout's obj/ folders untouched.
if [ "${SKIP_PUBLISH:-0}" != 1 ]; then
  CONTEXT="$WORK/context"
  mkdir -p "$CONTEXT"
  (cd "$REPO" && tar -cf - --exclude='bin' --exclude='obj' --exclude='.vs' --exclude='*.user' \
      Directory.Build.props Directory.Packages.props src) | tar -xf - -C "$CONTEXT" \
    || fail "could not copy the build context"
  say "dotnet publish src/IGpt.Api -> $PUBLISH_DIR (from a copy of the build context in $CONTEXT)"
  rm -rf "$PUBLISH_DIR"
  (cd "$CONTEXT" \
    && dotnet restore src/IGpt.Api/IGpt.Api.csproj -r linux-x64 --nologo -v quiet \
    && dotnet publish src/IGpt.Api -c Release -r linux-x64 --self-contained false -p:UseAppHost=false \
         --no-restore --nologo -v quiet -o "$PUBLISH_DIR") || fail "dotnet publish failed"
  # The Dockerfile's next command: drop the Windows native DLLs the ORT Windows package copies anyway.
  find "$PUBLISH_DIR" -maxdepth 1 -name 'onnxruntime*.dll' -delete
fi
[ -f "$PUBLISH_DIR/IGpt.Api.dll" ] || fail "$PUBLISH_DIR/IGpt.Api.dll is missing"
[ -f "$PUBLISH_DIR/Microsoft.ML.OnnxRuntime.dll" ] || fail "the ONNX Runtime managed wrapper is missing"
for lib in libonnxruntime.so libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so; do
  [ -f "$PUBLISH_DIR/$lib" ] || fail "ONNX Runtime's $lib is not in the publish folder"
done
if [ -d "$PUBLISH_DIR/runtimes/win-x64" ] || ls "$PUBLISH_DIR"/onnxruntime*.dll >/dev/null 2>&1; then
  fail "Windows native libraries are in the publish folder (expected linux-x64 only)"
fi

# 2. The image's layout: the Dockerfile copies appsettings.json and models/ next to the app.
cp "$REPO/appsettings.json" "$PUBLISH_DIR/"
rm -rf "$PUBLISH_DIR/models"
cp -r "$REPO/models" "$PUBLISH_DIR/models"
say "publish folder: $(du -sh "$PUBLISH_DIR" | cut -f1)"

# 3. "Mount" other models: a folder with the tiny package, passed as Inference__ModelsPath.
mkdir -p "$WORK/models"
cp -r "$PACKAGE" "$WORK/models/tiny"
MODEL_ID=$(jq -r .id "$PACKAGE/model.json")

say "starting the service from $PUBLISH_DIR on $BASE (CPU provider, models from $WORK/models)"
(
  cd "$PUBLISH_DIR"
  exec env ASPNETCORE_ENVIRONMENT=Production \
    Inference__ModelsPath="$WORK/models" \
    Inference__UseCuda="${USE_CUDA:-false}" \
    Inference__IntraOpThreads="${INTRA_OP_THREADS:-1}" \
    dotnet IGpt.Api.dll --urls "$BASE"
) >"$LOG" 2>&1 &
PID=$!

# 4. Wait for readiness (the container's HEALTHCHECK asks the same question).
ready=""
for _ in $(seq 1 120); do
  kill -0 "$PID" 2>/dev/null || fail "the service exited during start"
  if curl -fsS -o /dev/null "$BASE/health/ready" 2>/dev/null; then ready=1; break; fi
  sleep 0.5
done
[ -n "$ready" ] || fail "/health/ready did not answer 200 within 60 s"

status=$(curl -fsS "$BASE/health/live" -o /dev/null -w '%{http_code}') || fail "/health/live failed"
say "/health/live -> $status"
ready_body=$(curl -fsS "$BASE/health/ready") || fail "/health/ready failed"
say "/health/ready -> $ready_body"

models=$(curl -fsS "$BASE/v1/models") || fail "/v1/models failed"
model_status=$(jq -r --arg id "$MODEL_ID" '.models[] | select(.id == $id) | .status' <<<"$models")
provider=$(jq -r --arg id "$MODEL_ID" '.models[] | select(.id == $id) | .execution_provider' <<<"$models")
reason=$(jq -r --arg id "$MODEL_ID" '.models[] | select(.id == $id) | .provider_reason' <<<"$models")
[ "$model_status" = ready ] || fail "model $MODEL_ID is '$model_status', expected ready: $models"
say "model $MODEL_ID: $model_status on $provider ($reason)"

# The config story: appsettings.json beside the app was read (its Serilog output template prints
# "[HH:mm:ss LVL] SourceContext: message"), and the environment variable overrode ModelsPath.
grep -Eq '^\[[0-9]{2}:[0-9]{2}:[0-9]{2} INF\] ' "$LOG" \
  || fail "the log is not in appsettings.json's Serilog format: appsettings.json beside the app was not read"
grep -q "$WORK/models" "$LOG" || fail "the log does not name the models folder from Inference__ModelsPath"

# 5. One unconditional sample, then one completion of its top half.
sample=$(curl -fsS -H 'Content-Type: application/json' -d '{"n": 1, "seed": 7}' \
  "$BASE/v1/models/$MODEL_ID/samples") || fail "POST samples failed"
image=$(jq -r '.images[0]' <<<"$sample")
if [ -z "$image" ] || [ "$image" = null ]; then fail "the sample has no image: $sample"; fi
say "sample: $(jq -c '{seed, usage, timings}' <<<"$sample")"

height=$(jq -r .image.height "$PACKAGE/model.json")
rows=$((height / 2))
completion=$(jq -n --arg image "$image" --argjson rows "$rows" '{image: $image, rows: $rows, n: 2, seed: 42}' \
  | curl -fsS -H 'Content-Type: application/json' --data-binary @- "$BASE/v1/models/$MODEL_ID/completions") \
  || fail "POST completions failed"
count=$(jq '.images | length' <<<"$completion")
[ "$count" = 2 ] || fail "expected 2 completed images: $completion"
say "completion: $(jq -c '{rows, usage, timings, prefix_cache_hit}' <<<"$completion")"

# A bad request is a 4xx problem, not a 500 (the container adds nothing here; a quick sanity check).
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d '{"n": 0}' \
  "$BASE/v1/models/$MODEL_ID/samples")
[ "$code" = 400 ] || fail "n=0 answered $code, expected 400"

# 6. Stop it (SIGTERM, as docker stop / Kubernetes do) and check it exits cleanly.
kill -TERM "$PID"
for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$PID" 2>/dev/null; then fail "the service did not stop within 10 s of SIGTERM"; fi
wait "$PID" 2>/dev/null && rc=0 || rc=$?
PID=""
[ "$rc" = 0 ] || [ "$rc" = 143 ] || fail "the service exited with $rc after SIGTERM"
say "stopped (exit $rc)"
say "OK: the published app serves from its own folder with the image's layout"
