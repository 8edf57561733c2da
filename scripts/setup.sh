#!/usr/bin/env bash
# Create .venv/ in the repo root (if missing) and install bob with the given extras.
# Usage: bash scripts/setup.sh [EXTRAS]      e.g. bash scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# pip's "Location ... is ignored" warnings about optional local mirrors are noise; keep real errors.
.venv/bin/python -m pip install -q -e "$spec" 2>&1 | grep -v -e "^WARNING: Location" -e "^\s*$" || true
.venv/bin/python -c "import harness, torch, timm" # fail loudly if the install did not work
