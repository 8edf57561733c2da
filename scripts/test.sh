#!/usr/bin/env bash
# Install the test dependencies into .venv/ and run the whole test suite (slow tests included),
# then the CLI-latency benchmark. pytest's exit code 5 ("no tests collected") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev || exit 1
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
[ "$status" -ne 0 ] && exit "$status"
.venv/bin/python bench/bench_cli.py --check
