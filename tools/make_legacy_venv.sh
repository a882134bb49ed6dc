#!/usr/bin/env bash
# Builds .venv-legacy: the stack arcface_torch users have today (mxnet 1.9.1, numpy 1.23.5) plus
# this plugin. Tests use it as the reference for the record reader and to prove the plugin
# imports and reads under numpy 1.23. Tests that need it skip locally without it and fail in CI.
# numpy==1.23.5 in the same install makes pip pick OpenCV 4.11, the last release for numpy 1 (4.12+
# needs numpy 2), as README's "OpenCV" section tells mxnet users.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "tools/make_legacy_venv.sh: $*" >&2; }
if [ -x .venv-legacy/bin/python ] && .venv-legacy/bin/python -c "import mxnet, craft_plugin" 2>/dev/null; then
  say "reusing .venv-legacy (mxnet and craft_plugin import)"
  exit 0
fi
say "creating .venv-legacy"
rm -rf .venv-legacy
python3 -m venv .venv-legacy
say ".venv-legacy: installing torch 2.13.0, numpy 1.23.5, mxnet 1.9.1, OpenCV (the first time, a download of torch and mxnet)"
.venv-legacy/bin/pip install -q torch==2.13.0 "numpy==1.23.5" "mxnet==1.9.1" opencv-python-headless easydict tqdm
say ".venv-legacy: installing craft-plugin (editable, no dependencies)"
.venv-legacy/bin/pip install -q --no-deps -e .
.venv-legacy/bin/python -c "import mxnet, numpy, craft_plugin; import cv2; print('legacy venv: mxnet', mxnet.__version__, 'numpy', numpy.__version__, 'OpenCV', cv2.__version__)"
