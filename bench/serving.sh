#!/usr/bin/env bash
# The serving goal: tokens/s through the running service for 1 and 16 clients (tools/IGpt.Load, unconditional samples of
# fashion-mnist-28 unless --model says otherwise), with each configuration in turn, over several rounds.
#   bench/serving.sh [--rounds 2] [--seconds 20] [--model fashion-mnist-28] [--kind samples] [--against CHECKOUT] [CONFIG ...]
# A CONFIG is a label and the service's extra arguments, e.g. 'int8=--Inference:KvCacheType=int8'
# 'sessions=--Inference:KernelStepRows=0'; default: int8, float16 and float32 caches. Each configuration runs in a fresh
# service process (the Release build of src/IGpt.Api, the launchSettings environment), configurations alternate within a
# round, and the resident memory of the service after the load is read from /proc. Prints one markdown table; the load
# tool's own tables go to benchmarks/raw/serving-<label>-<round>.txt. Run it on an otherwise idle machine.
# --against CHECKOUT: a code A/B. Each configuration also runs the service of CHECKOUT (another commit's tree, its
# src/IGpt.Api built in Release; its own models/ served), labelled base-<label>, alternating with this checkout's within
# every round (the order swapped every round).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=2 seconds=20 model=fashion-mnist-28 kind=samples port=8091 against=
configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --kind) kind=$2; shift 2 ;;
    --against) against=$(cd "$2" && pwd); shift 2 ;;
    *=*) configs+=("$1"); shift ;;
    *) echo "bench/serving.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#configs[@]} -gt 0 ] || configs=("int8=--Inference:KvCacheType=int8" "float16=--Inference:KvCacheType=float16" "float32=--Inference:KvCacheType=float32")
dotnet build src/IGpt.Api/IGpt.Api.csproj -c Release --nologo -v q >/dev/null
dotnet build tools/IGpt.Load/IGpt.Load.csproj -c Release --nologo -v q >/dev/null
api=src/IGpt.Api/bin/Release/net10.0/IGpt.Api.dll
if [ -n "$against" ] && [ ! -f "$against/$api" ]; then echo "bench/serving.sh: $against/$api is missing: build src/IGpt.Api -c Release there" >&2; exit 2; fi
load=tools/IGpt.Load/bin/Release/net10.0/IGpt.Load.dll
mkdir -p benchmarks/raw
rows=()
for round in $(seq 1 "$rounds"); do
  runs=()   # label|tree|arguments, in this round's order
  for config in "${configs[@]}"; do
    here="${config%%=*}|$PWD|${config#*=}"
    if [ -z "$against" ]; then runs+=("$here")
    elif [ $((round % 2)) -eq 1 ]; then runs+=("base-${config%%=*}|$against|${config#*=}" "$here")
    else runs+=("$here" "base-${config%%=*}|$against|${config#*=}"); fi
  done
  for run in "${runs[@]}"; do
    IFS='|' read -r label tree args <<< "$run"
    config="$label=$args"
    read -r -a extra <<< "$args"
    # The service runs in its own tree: its models/ and appsettings (the working directory decides both).
    (cd "$tree" && GLIBC_TUNABLES=glibc.malloc.hugetlb=1 exec dotnet "$api" --urls "http://127.0.0.1:$port" "${extra[@]}") \
      >"benchmarks/raw/serving-$label-$round.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.5; done
    out="benchmarks/raw/serving-$label-$round.txt"
    dotnet "$load" --url "http://127.0.0.1:$port" --model "$model" --kind "$kind" --clients 1,16 --seconds "$seconds" --warmup 3 >"$out"
    rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    one=$(awk -F'|' '$2 ~ /^ *1 *$/ {gsub(/[ ,]/, "", $8); print $8}' "$out")
    sixteen=$(awk -F'|' '$2 ~ /^ *16 *$/ {gsub(/[ ,]/, "", $8); print $8}' "$out")
    step=$(awk -F'|' '$2 ~ /^ *16 *$/ {gsub(/ /, "", $15); print $15}' "$out")
    ratio=$(awk -v a="$sixteen" -v b="$one" 'BEGIN { printf "%.2f", a / b }')
    rows+=("| $round | $label (${config#*=}) | $one | $sixteen | $ratio | $step | $rss |")
    echo "round $round $label: 1 client $one tokens/s, 16 clients $sixteen ($ratio x), $step ms a step at 16, $rss MiB resident" >&2
  done
done
echo
# The host decides the figures (its FMA width, DRAM and whether the int8 kernels have AVX-VNNI): name it, as bench/run.py does.
cpu=$(awk -F': ' '/^model name/ {m=$2} /^cpu family/ {f=$2} /^model\t/ {n=$2} /^flags/ {v=($0 ~ / avx_vnni /) ? "yes" : "no"; exit} END {printf "%s (family %s, model %s; AVX-VNNI: %s)", m, f, n, v}' /proc/cpuinfo)
echo "Serving, $model $kind, 1 and 16 clients, $seconds s a level after 3 s of warm-up, $(date -u +%Y-%m-%dT%H:%MZ), on $cpu, $(nproc) cores:"
echo
echo "| round | service | 1 client, tokens/s | 16 clients, tokens/s | 16 over 1 | ms a step at 16 | resident MiB after |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
