#!/usr/bin/env bash
# Builds what a GPU run of the service needs, in pieces that each fit one device call (64 MiB with the tree):
#   OUT/1-provider.tar.xz  the ORT CUDA provider with only sm_90 code (strip_fatbin.py), ~52 MB
#   OUT/2-app.tar.xz       the service, self-contained for linux-x64, with libonnxruntime.so, ~45 MB
#   OUT/3-run.tar.xz       the shipped packages named, 200 Fashion-MNIST test images, and the random iGPT-S-size
#                          package's graphs and recipe (bench/gpu/igpt_s_package.py; its weights are rebuilt there)
# usage: bench/gpu/build_kit.sh OUT [model|package-folder ...]      (default: fashion-mnist-28 emoji-32)
# A piece already in OUT is kept (delete it to rebuild). The steps on the device: benchmarks/README.md, "CUDA".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); project=$(cd "$here/../.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd); shift
models=("${@:-fashion-mnist-28 emoji-32}"); read -ra models <<< "${models[*]}"
strip=${STRIP_FATBIN:-$project/../shared/gpu/strip_fatbin.py}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

if [[ ! -f $out/1-provider.tar.xz || ! -f $out/2-app.tar.xz ]]; then
  dotnet publish "$project/src/IGpt.Api" -c Release -r linux-x64 --self-contained -o "$work/app" -v q --nologo
  provider=$(find "$work/app" -name libonnxruntime_providers_cuda.so | head -1)
  [[ -n $provider ]] || { echo "no libonnxruntime_providers_cuda.so in the publish output" >&2; exit 1; }
  mkdir -p "$work/p1"
  /usr/bin/python3 "$strip" "$provider" "$work/p1/libonnxruntime_providers_cuda.so" 90
  cp "$(dirname "$provider")/libonnxruntime_providers_shared.so" "$work/p1/"
  # what the device does not need: the full provider, TensorRT, the Windows DLLs the Gpu package copies, symbols
  find "$work/app" \( -name 'libonnxruntime_providers_cuda.so' -o -name 'libonnxruntime_providers_tensorrt.so' \
    -o -name 'onnxruntime*.dll' -o -name '*.pdb' \) -delete
  tar -C "$work/p1" -cf - . | xz -9e -T2 > "$out/1-provider.tar.xz"
  tar -C "$work" -cf - app | xz -9e -T2 > "$out/2-app.tar.xz"
fi

mkdir -p "$work/run/models"
for m in "${models[@]}"; do  # a shipped model's id, or a package folder's path
  src=$project/models/$m; [[ $m == */* ]] && src=$(cd "$m" && pwd)
  mkdir -p "$work/run/models/$(basename "$m")"
  weights=weights.data; [[ -f $src/weights.recipe.json ]] && weights="weights.recipe.json weights.kept.bin"  # filled there
  (cd "$src" && cp model.json $weights genai_config.json ./*.onnx "$work/run/models/$(basename "$m")/")
done
s=$project/bench/packages/igpt-s-random
[[ -f $s/weights.recipe.json ]] || /usr/bin/python3 "$here/igpt_s_package.py" make "$s"
mkdir -p "$work/run/models/igpt-s-random"
(cd "$s" && cp model.json genai_config.json ./*.onnx weights.recipe.json weights.kept.bin "$work/run/models/igpt-s-random/")
/usr/bin/python3 - "$work/run/test_images.npz" <<'PY'
import gzip, sys, numpy as np
d = "/usr/share/datasets/fashion-mnist/"
x = np.frombuffer(gzip.open(d + "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
y = np.frombuffer(gzip.open(d + "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
np.savez_compressed(sys.argv[1], images=x[8000:8200], labels=y[8000:8200])
PY
tar -C "$work/run" -cf - . | xz -9e -T2 > "$out/3-run.tar.xz"
ls -la "$out"
