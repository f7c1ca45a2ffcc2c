#!/usr/bin/env bash
# Regenerate the shipped benchmark matrix (the Benchmark tab shows it at once): every drafter configuration that can
# run on the target beside Hugging Face greedy, 2 prompts per category × 96 new tokens, greedy, all in one fresh run
# (--no-cache: every row measured in this run). Run it alone on the machine: other CPU work distorts the timings.
# Usage: scripts/bench_matrix.sh [TARGET]   (default smollm2-135m)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${1:-smollm2-135m}"
PYTHONPATH=. .venv/bin/python -m core.cli bench --matrix --target "$TARGET" --per-category 2 --max-new-tokens 96 \
  --no-cache --out "assets/bench/matrix-$TARGET.json"
