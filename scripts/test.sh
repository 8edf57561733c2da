#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (slow and SLURM tests included),
# then the CLI-latency benchmark. As root it also installs Chromium/ChromeDriver and SLURM from
# Debian and starts a one-node SLURM cluster; otherwise those tests are skipped with the reason.
# Tests run on two pytest-xdist workers. pytest's exit code 5 ("no tests collected") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev || exit 1
if [ "$(id -u)" = 0 ]; then
  bash scripts/install_system_deps.sh || echo "warning: system packages could not be installed" >&2
  bash scripts/start_slurm.sh || echo "warning: SLURM did not start; the SLURM tests will be skipped" >&2
fi
# Two workers (BOB_TEST_WORKERS): a module's tests and all SLURM tests each stay on one worker (tests/conftest.py).
.venv/bin/python -m pytest -n "${BOB_TEST_WORKERS:-2}" --dist loadgroup "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
[ "$status" -ne 0 ] && exit "$status"
.venv/bin/python bench/bench_cli.py --check
