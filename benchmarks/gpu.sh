#!/usr/bin/env bash
# The first GPU hour in one command (benchmarks/gpu.py): pytest -m gpu and facerec's throughput against bare
# PyTorch, written to benchmarks/RESULTS.md. Run after `make install`, from any folder:
#   benchmarks/gpu.sh                          # one CUDA GPU, under 8 minutes
#   benchmarks/gpu.sh --device cpu --tiny --results /tmp/RESULTS.md   # the dry run of the test suite
# PYTHON=... picks another interpreter than the repo's .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NO_ALBUMENTATIONS_UPDATE=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-$root/.venv/bin/python}" -m benchmarks.gpu "$@"
