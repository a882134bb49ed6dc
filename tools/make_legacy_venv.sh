#!/usr/bin/env bash
# Builds .venv-legacy: the stack arcface_torch users have today (mxnet 1.9.1, numpy 1.23.5) plus
# this plugin. Tests use it as the reference for the record reader and to prove the plugin
# imports and reads under numpy 1.23. Tests that need it skip locally without it and fail in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv-legacy/bin/python ] && .venv-legacy/bin/python -c "import mxnet, craft_plugin" 2>/dev/null; then
  exit 0
fi
rm -rf .venv-legacy
python3 -m venv .venv-legacy
.venv-legacy/bin/pip install -q torch==2.13.0 "numpy==1.23.5" "mxnet==1.9.1" "opencv-python-headless<4.11" easydict tqdm
.venv-legacy/bin/pip install -q --no-deps -e .
.venv-legacy/bin/python -c "import mxnet, numpy, craft_plugin; print('legacy venv: mxnet', mxnet.__version__, 'numpy', numpy.__version__)"
