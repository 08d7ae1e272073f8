#!/usr/bin/env bash
# The device calls of a GPU run (benchmarks/README.md, "CUDA"), from the repository root on the lent machine:
#   bench/gpu/device.sh provider   carry gpu-carry/1-provider.tar.xz: unpack it, report the machine, PyTorch's iGPT-S decode
#   bench/gpu/device.sh service    carry gpu-carry/2-app.tar.xz and 3-run.tar.xz: unpack, run gpu_driver.py, then
#                                  hf_parity.py (SKIP_PARITY=1: not)
# gpu-run/ (git-ignored, never carried) holds what is unpacked and stays between calls on a warm machine.
set -uo pipefail
K=gpu-run; OUT=${OUT:-/tmp/out}; mkdir -p "$K/app" "$OUT"
libs=$(python3 -c "import nvidia,glob,os; print(':'.join(d for r in nvidia.__path__ for d in sorted(glob.glob(os.path.join(r,'*','lib')))))" 2>/dev/null)
case ${1:-} in
provider)
  tar -C "$K/app" -xJf gpu-carry/1-provider.tar.xz && ls -la "$K/app"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import sys,torch,numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)"
  python3 -m pip list 2>/dev/null | grep -i -E "^(onnx|onnxruntime|transformers|pillow|nvidia)" | tr -s ' ' | paste -sd' '
  echo "nvidia libs: $libs"
  echo "provider's libraries:"; LD_LIBRARY_PATH=$libs ldd "$K/app/libonnxruntime_providers_cuda.so" | grep -E "not found|cu|nv"
  for l in libcudnn.so.9 libcufft.so.12 libcufft.so.11; do
    LD_LIBRARY_PATH=$libs python3 -c "import ctypes; ctypes.CDLL('$l'); print('$l loads')" 2>&1 | tail -1; done
  lscpu | grep -E "^Model name|^CPU\(s\)"
  [[ -n ${SKIP_TORCH:-} ]] || timeout 150 python3 bench/gpu_torch.py --models igpt-s --batches 1,16 --steps 64 --out "$OUT/torch-igpt-s.json"
  ;;
service)
  tar -C "$K" -xJf gpu-carry/2-app.tar.xz && tar -C "$K" -xJf gpu-carry/3-run.tar.xz || exit 1
  ls "$K/app" | grep -c . ; ls "$K/app" | grep onnxruntime
  for r in "$K"/models/*/weights.recipe.json; do python3 bench/gpu/igpt_s_package.py fill "$(dirname "$r")" || exit 1; done
  DRIVER_DEADLINE=${DRIVER_DEADLINE:-300} python3 bench/gpu/gpu_driver.py "$K" > "$OUT/driver.log" 2>&1; rc=$?
  tail -c 9000 "$OUT/driver.log"; echo "driver rc $rc"
  [[ -z ${SKIP_PARITY:-} ]] || exit $rc
  if python3 -c "import onnx, onnxruntime" 2>/dev/null; then mode=--onnx; else mode=--no-onnx; fi
  (cd training && timeout ${PARITY_TIMEOUT:-150} python3 scripts/hf_parity.py $mode) > "$OUT/hf_parity.txt" 2>&1; echo "hf_parity $mode rc $?"
  tail -40 "$OUT/hf_parity.txt"
  ;;
*) echo "usage: $0 provider|service" >&2; exit 2 ;;
esac
