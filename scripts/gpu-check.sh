#!/usr/bin/env bash
# GPU figures in one command, on a host with an NVIDIA GPU, its driver, CUDA 13 + cuDNN 9 libraries
# (what Microsoft.ML.OnnxRuntime.Gpu 1.31 loads) and the .NET 10 SDK:
#   - runs the inference library's device tests on the GPU (the decoder's device KV cache, slot copies and
#     CUDA graphs against the same fp16 graph without a cache; SKIP_DEVICE_TESTS=1 skips them),
#   - publishes the service as the Dockerfile does and starts it with the CUDA provider,
#   - checks that every model runs on CUDA (the log line and /v1/models; prints the reason if not),
#   - times unconditional samples at several batch sizes and prints a table: server-side decode
#     time per step, per token, and tokens/s (plus the wall time per request), then bursts of
#     concurrent one-image requests (batched by the scheduler): aggregate tokens/s and p50 latency,
#   - optionally (CPU_BASELINE=1) the same table on the CPU provider on the same machine.
#
#   scripts/gpu-check.sh                          # the repository's models/
#   MODELS_DIR=/srv/models scripts/gpu-check.sh   # other packages
#   MODELS_DIR=tests/fixtures CUDA_DEVICE_ID=1 BATCHES="1 8 16" REPEATS=5 scripts/gpu-check.sh
#   CUDA_GRAPHS=false scripts/gpu-check.sh        # decode steps without CUDA graphs (the default is with)
#   CUDA_MEMORY_LIMIT=8589934592 scripts/gpu-check.sh   # Inference:CudaMemoryLimitBytes
#
# Inside the image instead (no SDK needed):
#   docker run --rm --gpus all -p 8080:8080 igpt  and  BASE=http://127.0.0.1:8080 scripts/gpu-check.sh
# (with BASE set the script benchmarks that running service and starts nothing).
# Exit status: 0 all models on CUDA and benchmarked; 2 a model is not on CUDA; 1 any other failure.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PUBLISH_DIR=${PUBLISH_DIR:-/tmp/igpt-gpu-publish}
PORT=${PORT:-5098}
MODELS_DIR=$(cd "${MODELS_DIR:-$REPO/models}" && pwd)
CUDA_DEVICE_ID=${CUDA_DEVICE_ID:-0}
CUDA_GRAPHS=${CUDA_GRAPHS:-true}
CUDA_MEMORY_LIMIT=${CUDA_MEMORY_LIMIT:-0}
BATCHES=${BATCHES:-"1 4 16"}
REPEATS=${REPEATS:-3}
CONCURRENCY=${CONCURRENCY:-"1 8 16"}
MODEL=${MODEL:-}                 # one model id; default: every ready model
EXTERNAL_BASE=${BASE:-}
WORK=$(mktemp -d /tmp/igpt-gpu.XXXXXX)
PID=""

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$1" >&2; exit "${2:-1}"; }
stop_service() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  PID=""
}
cleanup() { stop_service; rm -rf "$WORK"; }
trap cleanup EXIT

for tool in curl jq awk; do command -v "$tool" >/dev/null 2>&1 || fail "$tool is required"; done

# ---- the host ----
if command -v nvidia-smi >/dev/null 2>&1; then
  say "GPU"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv,noheader | sed 's/^/   /'
else
  say "nvidia-smi not found: no NVIDIA driver on this host (the service will fall back to CPU)"
fi
if [ -z "$EXTERNAL_BASE" ] && command -v ldconfig >/dev/null 2>&1; then
  for lib in libcudart.so.13 libcublasLt.so.13 libcudnn.so.9; do
    if ldconfig -p | grep -q "$lib"; then say "found $lib"
    else say "WARNING: $lib is not in the linker cache (ldconfig -p); set LD_LIBRARY_PATH if it lives elsewhere"; fi
  done
fi

# ---- start the service (unless BASE points at a running one) ----
start_service() {  # $1 = true|false (UseCuda), $2 = log file
  local base="http://127.0.0.1:${PORT}"
  (
    cd "$PUBLISH_DIR"
    exec env Inference__ModelsPath="$MODELS_DIR" Inference__UseCuda="$1" \
      Inference__CudaDeviceId="$CUDA_DEVICE_ID" Inference__CudaGraphs="$CUDA_GRAPHS" \
      Inference__CudaMemoryLimitBytes="$CUDA_MEMORY_LIMIT" dotnet IGpt.Api.dll --urls "$base"
  ) >"$2" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do
    kill -0 "$PID" 2>/dev/null || { tail -n 40 "$2" >&2; fail "the service exited during start"; }
    if curl -fsS -o /dev/null "$base/health/ready" 2>/dev/null; then BASE_URL=$base; return 0; fi
    sleep 0.5
  done
  tail -n 40 "$2" >&2
  fail "/health/ready did not answer 200 within 300 s"
}

if [ -z "$EXTERNAL_BASE" ]; then
  command -v dotnet >/dev/null 2>&1 || fail "the .NET 10 SDK (dotnet) is required"
  if [ "${SKIP_DEVICE_TESTS:-0}" != 1 ]; then
    say "device tests (tests/IGpt.Inference.Tests DevicePathTests on CUDA device $CUDA_DEVICE_ID)"
    (cd "$REPO" && CUDA_VISIBLE_DEVICES="$CUDA_DEVICE_ID" IGPT_EXPECT_CUDA=1 \
      dotnet test tests/IGpt.Inference.Tests -c Release --nologo -v quiet --filter "FullyQualifiedName~DevicePathTests") \
      || fail "device tests failed (see above)"
  fi
  if [ "${SKIP_PUBLISH:-0}" != 1 ]; then
    say "dotnet publish src/IGpt.Api -> $PUBLISH_DIR"
    rm -rf "$PUBLISH_DIR"
    (cd "$REPO" \
      && dotnet restore src/IGpt.Api/IGpt.Api.csproj -r linux-x64 --nologo -v quiet \
      && dotnet publish src/IGpt.Api -c Release -r linux-x64 --self-contained false -p:UseAppHost=false \
           --no-restore --nologo -v quiet -o "$PUBLISH_DIR") || fail "dotnet publish failed"
    find "$PUBLISH_DIR" -maxdepth 1 -name 'onnxruntime*.dll' -delete   # as the Dockerfile does
    cp "$REPO/appsettings.json" "$PUBLISH_DIR/"
  fi
  say "starting the service with the CUDA provider (device $CUDA_DEVICE_ID, CUDA graphs $CUDA_GRAPHS, arena limit $CUDA_MEMORY_LIMIT), models from $MODELS_DIR"
  start_service true "$WORK/cuda.log"
else
  BASE_URL=$EXTERNAL_BASE
  say "benchmarking the running service at $BASE_URL"
fi

# ---- which provider each model got ----
models_json=$(curl -fsS "$BASE_URL/v1/models") || fail "/v1/models failed"
say "models"
jq -r '.models[] | "   \(.id): \(.status), \(.execution_provider // "-") (\(.provider_reason // .error // ""))"' <<<"$models_json"
if [ -n "$MODEL" ]; then ids=$MODEL
else ids=$(jq -r '.models[] | select(.status == "ready") | .id' <<<"$models_json"); fi
[ -n "$ids" ] || fail "no ready model under $MODELS_DIR"

not_cuda=""
for id in $ids; do
  provider=$(jq -r --arg id "$id" '.models[] | select(.id == $id) | .execution_provider' <<<"$models_json")
  [ "$provider" = CUDA ] || not_cuda="$not_cuda $id"
done
if [ -z "$EXTERNAL_BASE" ]; then
  say "log lines about providers"
  grep -E "execution provider|CUDA" "$WORK/cuda.log" | sed 's/^/   /' | head -n 20 || true
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  say "GPU memory after loading: $(nvidia-smi --id="$CUDA_DEVICE_ID" --query-gpu=memory.used --format=csv,noheader)"
fi

# ---- the benchmark ----
# One request = n unconditional samples of the whole image (prompt = SOS only), seeded. The service
# reports decode_ms (its decode loop) and generated_tokens (all n images); a decode step advances
# every image by one token, so ms/step = decode_ms / tokens per image and ms/token = decode_ms / tokens.
bench() {  # $1 = label
  printf '\n%s\n' "$1"
  printf '| %-22s | %5s | %8s | %12s | %10s | %10s | %10s |\n' model n requests "wall ms/req" "ms/step" "ms/token" "tokens/s"
  printf '|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------" "-------" "----------" "--------------" "------------" "------------" "------------"
  for id in $ids; do
    # warm-up (first run allocates, tunes kernels, captures graphs)
    curl -fsS -o /dev/null -H 'Content-Type: application/json' -d '{"n": 1, "seed": 1}' \
      "$BASE_URL/v1/models/$id/samples" || fail "warm-up sample of $id failed"
    for n in $BATCHES; do
      if [ "$n" -gt 16 ]; then continue; fi   # the API takes n = 1..16 per request
      local total_decode=0 total_tokens=0 total_wall=0 per_image=0 out wall
      for r in $(seq 1 "$REPEATS"); do
        out=$(curl -fsS -w '\n%{time_total}' -H 'Content-Type: application/json' \
          -d "{\"n\": $n, \"seed\": $((100 + r))}" "$BASE_URL/v1/models/$id/samples") \
          || fail "sample of $id (n=$n) failed"
        wall=$(tail -n 1 <<<"$out")
        out=$(sed '$d' <<<"$out")
        total_decode=$(awk -v a="$total_decode" -v b="$(jq -r .timings.decode_ms <<<"$out")" 'BEGIN{print a+b}')
        total_tokens=$(awk -v a="$total_tokens" -v b="$(jq -r .usage.generated_tokens <<<"$out")" 'BEGIN{print a+b}')
        total_wall=$(awk -v a="$total_wall" -v b="$wall" 'BEGIN{print a+b*1000}')
      done
      per_image=$(awk -v t="$total_tokens" -v n="$n" -v r="$REPEATS" 'BEGIN{print t/(n*r)}')
      awk -v id="$id" -v n="$n" -v r="$REPEATS" -v w="$total_wall" -v d="$total_decode" -v t="$total_tokens" -v p="$per_image" \
        'BEGIN{printf "| %-22s | %5d | %8d | %12.1f | %10.3f | %10.4f | %10.0f |\n", id, n, r, w/r, d/(p*r), d/t, t/(d/1000)}'
    done
  done
}

# Concurrent requests of one image each: the scheduler batches them into shared decode steps, so this
# is the serving figure (aggregate tokens/s over the wall time of the whole burst).
concurrent() {  # $1 = label
  printf '\n%s\n' "$1"
  printf '| %-22s | %11s | %12s | %16s | %14s |\n' model concurrency "slowest ms" "tokens/s (total)" "ms/request p50"
  printf '|%s|%s|%s|%s|%s|\n' "------------------------" "-------------" "--------------" "------------------" "----------------"
  for id in $ids; do
    for c in $CONCURRENCY; do
      rm -f "$WORK"/burst_*.json "$WORK"/burst_times
      # shellcheck disable=SC2016  # the inner script expands its own positional parameters
      seq 1 "$c" | xargs -P "$c" -I{} sh -c \
        'curl -fsS -o "$1/burst_$2.json" -w "%{time_total}\n" -H "Content-Type: application/json" -d "{\"n\": 1, \"seed\": $2}" "$3" >>"$1/burst_times"' \
        _ "$WORK" {} "$BASE_URL/v1/models/$id/samples" || fail "concurrent samples of $id failed"
      # The requests start together; the burst lasts as long as its slowest request.
      local tokens p50 slowest
      tokens=$(jq -s 'map(.usage.generated_tokens) | add' "$WORK"/burst_*.json)
      p50=$(sort -n "$WORK/burst_times" | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]*1000}')
      slowest=$(sort -n "$WORK/burst_times" | tail -n 1 | awk '{print $1*1000}')
      awk -v id="$id" -v c="$c" -v w="$slowest" -v tok="$tokens" -v p50="$p50" \
        'BEGIN{printf "| %-22s | %11d | %12.1f | %16.0f | %14.1f |\n", id, c, w, tok/(w/1000), p50}'
    done
  done
}

device_name="CPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  device_name=$(nvidia-smi --id="$CUDA_DEVICE_ID" --query-gpu=name --format=csv,noheader 2>/dev/null || echo GPU)
fi
bench "Decode benchmark, execution provider as loaded ($device_name); $REPEATS requests per row, after one warm-up"
concurrent "Concurrent single-image samples ($device_name)"

if [ -z "$EXTERNAL_BASE" ] && [ "${CPU_BASELINE:-0}" = 1 ]; then
  stop_service
  say "restarting on the CPU provider for the baseline ($(nproc) cores)"
  start_service false "$WORK/cpu.log"
  bench "Baseline: CPU provider on the same host ($(nproc) cores)"
  concurrent "Baseline: concurrent single-image samples, CPU provider"
fi

if [ -n "$not_cuda" ]; then
  fail "not on CUDA:$not_cuda (see provider_reason above)" 2
fi
say "OK"
