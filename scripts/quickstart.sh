#!/usr/bin/env bash
# The main job: install bob into .venv/, run the quickstart sweep, publish its leaderboard.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/bob sweep grids/quickstart.yaml --publish quickstart
