#!/usr/bin/env bash
# Same as evaluate/run_inference.sh (kept at the top level for the original project's users).
#   ./run_inference.sh --model models/X --data data/dev.csv --gpu 1
exec "$(dirname "${BASH_SOURCE[0]}")/evaluate/run_inference.sh" "$@"
