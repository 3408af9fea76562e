#!/usr/bin/env bash
# A small λ sweep with plain rnnl2 calls: train once per λ, keep each run folder (the last line
# `rnnl2 train` prints), compare them, and print the λ with the lowest validation loss.
#
#   examples/lambda_sweep.sh [CONFIG] [LAMBDA...]
#   examples/lambda_sweep.sh configs/quickstart.yaml 0 1e-5 1e-4 1e-3
#
# Environment: RUNS_DIR (default runs/lambda_sweep), RNNL2 (the command, default rnnl2),
# EXTRA (more train arguments, e.g. "--set train.epochs=3").
# Exit status: that of the first failing rnnl2 call (1 a run failed, 2 bad config, 130 interrupted).
set -euo pipefail

config=${1:-configs/quickstart.yaml}
shift || true
lambdas=("$@")
if [ ${#lambdas[@]} -eq 0 ]; then
  lambdas=(0 1e-5 1e-4 1e-3)
fi
runs_dir=${RUNS_DIR:-runs/lambda_sweep}
rnnl2=${RNNL2:-rnnl2}

run_dirs=()
for lambda in "${lambdas[@]}"; do
  # stdout: only the run folder (-q); progress and errors go to stderr
  run_dir=$($rnnl2 train "$config" --set "l2.lambda=$lambda" --runs-dir "$runs_dir" -q ${EXTRA:-} | tail -n 1)
  echo "λ=$lambda → $run_dir" >&2
  run_dirs+=("$run_dir")
done

# One JSON object on stdout, rows sorted best first by the early-stopping metric.
pick_best=$(cat <<'PY'
import json, sys
table = json.load(sys.stdin)
best, metric = table["rows"][0], table["sort"]
lam = best.get("l2.lambda", "(the same in every run)")
print(f"best λ: {lam}  ({metric} {best[metric]:.4g}, run {best['run_dir']})")
PY
)
$rnnl2 compare "${run_dirs[@]}" --json | python3 -c "$pick_best"
