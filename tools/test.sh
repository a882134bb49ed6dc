#!/usr/bin/env bash
# The README's test command and CI's (.ci/run runs it): from a fresh clone, with no venv active,
# builds everything the tests need from outside the repository, then runs the whole suite.
#   .venv              torch 2.13.0 (the build pip resolves for this machine), this package with its [test] extra
#   .venv-legacy       mxnet 1.9.1 + numpy 1.23.5, the reader's reference (tools/make_legacy_venv.sh)
#   .venv-insightface  insightface's model_zoo for the export test (tools/make_insightface_venv.sh)
# Existing venvs are reused. CI=true (the default here) makes a missing resource a failure, not a skip.
# Extra arguments go to pytest (e.g. -m "not bench").
set -euo pipefail
export CI="${CI:-true}"
cd "$(dirname "$0")/.."
say() { echo "tools/test.sh: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
say ".venv: installing torch 2.13.0 (the first time, a download of up to a few GB with the CUDA build)"
.venv/bin/python -m pip install -q torch==2.13.0   # the torch the suite is tested with
say ".venv: installing craft-plugin with its [test] extra (editable)"
.venv/bin/python -m pip install -q -e ".[test]"
bash tools/make_legacy_venv.sh
bash tools/make_insightface_venv.sh
say "running the test suite: python -m pytest -q $*"
# pytest's exit 5 ("no tests ran") is a failure too
exec .venv/bin/python -m pytest -q "$@"
