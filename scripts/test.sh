#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (slow and SLURM tests included),
# then the CLI-latency benchmark. As root it also installs Chromium/ChromeDriver and SLURM from
# Debian and starts a one-node SLURM cluster; otherwise those tests are skipped with the reason.
# pytest's exit code 5 ("no tests collected") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev || exit 1
if [ "$(id -u)" = 0 ]; then
  bash scripts/install_system_deps.sh || echo "warning: system packages could not be installed" >&2
  bash scripts/start_slurm.sh || echo "warning: SLURM did not start; the SLURM tests will be skipped" >&2
fi
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
[ "$status" -ne 0 ] && exit "$status"
.venv/bin/python bench/bench_cli.py --check
