#!/usr/bin/env bash
# The GPU check (tools/gpu_check.py; docs/benchmarks.md): run from the repository root on a machine with a GPU,
# with that machine's own python3 (PYTHON overrides it). The report and logs go to $OUT (default gpu_check_out/).
#   tools/gpu_check.sh          the full check, under 8 minutes on an H200 (budget 450 s)
#   tools/gpu_check.sh --cpu    the dry run of the stages that need no GPU (CI runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
exec "$py" tools/gpu_check.py --python "$py" "$@"
