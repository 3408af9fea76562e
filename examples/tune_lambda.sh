#!/usr/bin/env bash
# Choose λ for one config two cheap ways, and print both choices:
#   1. `rnnl2 tune`: random λ (λ = 0 kept reachable) with successive halving — the trials that
#      trail at a rung stop there, the best third go on, exactly where they paused;
#   2. an adaptive λ inside one run (`l2.adapt: hypergradient`), started from LAMBDA0.
#
#   examples/tune_lambda.sh [CONFIG]
#   TRIALS=27 examples/tune_lambda.sh configs/seed_lstm.yaml
#
# Environment: TRIALS (default 9), LAMBDA0 (default 1e-5), RUNS_DIR (default runs/tune_lambda),
# RNNL2 (the command, default rnnl2), EXTRA (more arguments for both, e.g. "--set train.epochs=3").
# Exit status: that of the first failing rnnl2 call (1 a run failed, 2 bad input, 130 interrupted).
set -euo pipefail

config=${1:-configs/quickstart.yaml}
runs_dir=${RUNS_DIR:-runs/tune_lambda}
rnnl2=${RNNL2:-rnnl2}

# stdout: only the folder (-q, last line); progress and errors go to stderr
tune_dir=$($rnnl2 tune "$config" --space 'l2.lambda=0|loguniform(1e-7,1e-1)' --trials "${TRIALS:-9}" \
  --runs-dir "$runs_dir" -q ${EXTRA:-} | tail -n 1)
run_dir=$($rnnl2 train "$config" --set "l2.lambda=${LAMBDA0:-1e-5}" --set l2.adapt=hypergradient \
  --runs-dir "$runs_dir" -q ${EXTRA:-} | tail -n 1)

show=$(cat <<'PY'
import json, sys
selection = json.load(open(f"{sys.argv[1]}/selection.json"))
summary = json.load(open(f"{sys.argv[2]}/summary.json"))
lam = selection["overrides"].get("l2.lambda")
print(f"tune: λ = {lam:g}  ({selection['metric']} {selection['mean']:.4g}; {sys.argv[1]})")
print(f"adaptive: λ = {summary['lambda_final']:.3g} at the end  "
      f"({summary['best_metric']} {summary['best_value']:.4g}; {sys.argv[2]})")
PY
)
python3 -c "$show" "$tune_dir" "$run_dir"
