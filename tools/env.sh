# Sourced by tools/test.sh and tools/build-book.sh: a virtual environment with the pinned
# requirements in .venv, and CIFAR-10 where the library looks for it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
export PATH="$PWD/.venv/bin:$PATH"
# CIFAR-10: the library reads $CONVMIXER_DATA when it is set, else one per-user folder
# (~/.cache/convmixer/data), wherever Python or Jupyter starts. Fill that same folder once from
# the JPEG copy beside the checkout when there is one; else the first use downloads it.
if [ -f ../shared/data/cifar10-jpeg.tar.gz ]; then
  python -m convmixer.data --from ../shared/data/cifar10-jpeg.tar.gz
fi
