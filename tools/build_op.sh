#!/usr/bin/env bash
# Build the deformable convolution extension in place (assets/ops/dcn), reusing an up-to-date build.
#   tools/build_op.sh full   CPU kernels, plus CUDA kernels when nvcc and a CUDA build of torch exist
#   tools/build_op.sh cpu    CPU kernels are enough (an existing full build is reused)
#   tools/build_op.sh auto   full when a GPU is visible to torch, else cpu
set -euo pipefail
mode=${1:-full}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
case "$py" in /*) ;; *) py=$(pwd)/$py ;; esac
op=$root/assets/ops/dcn
hash=$(cat "$op"/src/* "$op"/setup.py "$op"/build_config.py | sha1sum | cut -c1-16)
if [ "$mode" = auto ]; then
  if "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then mode=full; else mode=cpu; fi
fi
built() { [ -f "$op/.built-$1" ] && [ "$(cat "$op/.built-$1")" = "$hash" ] && ls "$op"/_dcn_ext*.so >/dev/null 2>&1; }
if built full; then echo "[setup] reusing the built DCN extension (CPU + CUDA kernels)"; exit 0; fi
if [ "$mode" = cpu ] && built cpu; then echo "[setup] reusing the built DCN extension (CPU kernels)"; exit 0; fi
if [ "$mode" = full ]; then cuda=auto; else cuda=0; fi
echo "[setup] building the DCN extension in place (assets/ops/dcn, DCN_WITH_CUDA=$cuda); log: assets/ops/dcn/build.log"
rm -f "$op"/.built-*
start=$(date +%s)
if ! (cd "$op" && PATH="$(dirname "$py"):$PATH" CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} DCN_WITH_CUDA=$cuda \
      "$py" setup.py build_ext --inplace > build.log 2>&1); then
  tail -n 40 "$op/build.log"
  echo "[setup] the DCN extension did not build (see assets/ops/dcn/build.log)"
  exit 1
fi
kind=cpu
if "$py" -c 'import sys; sys.path.insert(0, "'"$root"'"); from assets.ops.dcn import extension_has_cuda; sys.exit(0 if extension_has_cuda() else 1)'; then kind=full; fi
if [ "$mode" = full ] && [ $kind = cpu ]; then echo "[setup] no CUDA toolkit or CPU-only torch: built the CPU kernels only"; fi
echo "$hash" > "$op/.built-$kind"
[ $kind = full ] && echo "$hash" > "$op/.built-cpu"
echo "[setup] DCN extension built ($kind) in $(( $(date +%s) - start )) s"
