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
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q torch==2.13.0   # the torch the suite is tested with
.venv/bin/python -m pip install -q -e ".[test]"
bash tools/make_legacy_venv.sh
bash tools/make_insightface_venv.sh
# pytest's exit 5 ("no tests ran") is a failure too
exec .venv/bin/python -m pytest -q "$@"
