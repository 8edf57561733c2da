#!/usr/bin/env bash
# Debian packages the test suite uses: headless Chromium + ChromeDriver (the leaderboard page
# test) and slurm-wlm + munge (the one-node SLURM cluster). Needs root; skips what is installed.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "install_system_deps.sh: not root; skipping (browser and SLURM tests will say why they skip)" >&2; exit 0; fi
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v pdflatex >/dev/null || need+=(texlive-latex-base)  # compiles the published table.tex in tests (issue 28)
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
