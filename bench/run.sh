#!/usr/bin/env bash
# Benchmarks the service's decoder against PyTorch (with and without a KV cache) and
# onnxruntime-genai on the same model packages; see benchmarks/README.md.
#   bench/run.sh [--package models/<id>]... [--quick] [--reps N] [--methods igpt,ort-genai,...]
# Builds the two .NET workers (Release), writes the random-weight packages into bench/packages/
# when missing, then runs bench/run.py. Not part of ./test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=/usr/bin/python3
for p in python3-torch python3-onnx python3-numpy python3-pil libopenblas0-pthread; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "bench/run.sh: installing $p"; apt-get install -y -qq "$p" >/dev/null; }
done
dotnet build bench/IGpt.Bench/IGpt.Bench.csproj -c Release --nologo -v q
dotnet build bench/IGpt.Bench.Genai/IGpt.Bench.Genai.csproj -c Release --nologo -v q
"$PYTHON" bench/make_packages.py
exec "$PYTHON" bench/run.py "$@"
