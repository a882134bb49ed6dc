#!/usr/bin/env bash
# Builds .venv-insightface: insightface (its model_zoo loads our ONNX exports as ArcFaceONNX) with
# onnxruntime, in a venv of its own because insightface pulls opencv-python, which shares the cv2
# folder with our opencv-python-headless. No torch in it. tests/test_export.py runs its check there;
# it skips locally without this venv and fails in CI. About 25 s from PyPI wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "tools/make_insightface_venv.sh: $*" >&2; }
if [ -x .venv-insightface/bin/python ] && .venv-insightface/bin/python -c "import insightface.model_zoo, onnxruntime" 2>/dev/null; then
  say "reusing .venv-insightface (insightface and onnxruntime import)"
  exit 0
fi
say "creating .venv-insightface"
rm -rf .venv-insightface
python3 -m venv .venv-insightface
say ".venv-insightface: installing insightface 2.1 and onnxruntime"
.venv-insightface/bin/pip install -q "insightface==2.1" onnxruntime
.venv-insightface/bin/python -c "import insightface, onnxruntime; print('insightface venv:', insightface.__version__, 'onnxruntime', onnxruntime.__version__)"
