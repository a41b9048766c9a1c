# Sourced by tools/test.sh and tools/build-book.sh: a virtual environment with the pinned
# requirements in .venv, and CIFAR-10 where the library looks for it ($CONVMIXER_DATA).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
export PATH="$PWD/.venv/bin:$PATH"
# CIFAR-10: an explicit $CONVMIXER_DATA wins; else the JPEG copy beside the checkout, extracted
# once into ./data; else ./data is left to torchvision's download on first use.
if [ -z "${CONVMIXER_DATA:-}" ]; then
  export CONVMIXER_DATA="$PWD/data"
  if [ ! -d data/train ] && [ -f ../shared/data/cifar10-jpeg.tar.gz ]; then
    mkdir -p data && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C data
  fi
fi
