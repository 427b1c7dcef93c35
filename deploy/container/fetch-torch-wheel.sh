#!/usr/bin/env bash
# Put the torch wheel a bentofile carries into ./wheels of the project:   fetch-torch-wheel.sh [BENTOFILE]
# Only a pin with a local label (torch==2.13.0+cpu) is carried; PyPI's torch (the GPU bentofile)
# needs nothing here. pip finds it where pip is configured to look (this machine: a local copy),
# else on PyTorch's CPU index (TORCH_INDEX). Nothing is fetched while the wheel is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENTOFILE=${1:-$ROOT/bentofile.yaml}
PIP=${PIP:-$ROOT/.venv/bin/pip}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
pin=$(sed -n 's/^ *- *torch==\([^ #]*\).*$/\1/p' "$BENTOFILE")
case "$pin" in
  *+*) ;;
  *) exit 0 ;;
esac
shopt -s nullglob
have=("$ROOT"/wheels/torch-"$pin"-cp311-*.whl)
if [ ${#have[@]} -gt 0 ]; then
  exit 0
fi
mkdir -p "$ROOT/wheels"
printf '# fetched by deploy/container/fetch-torch-wheel.sh\n*\n' > "$ROOT/wheels/.gitignore"
# The image's Python and platform, whatever this machine is.
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
  --platform manylinux_2_28_x86_64 --retries 1 --extra-index-url "$TORCH_INDEX" \
  -d "$ROOT/wheels" "torch==$pin"
ls "$ROOT"/wheels/torch-"$pin"-cp311-*.whl
