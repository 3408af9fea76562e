#!/usr/bin/env bash
# The GPU figures of issue 11 in one go (< 8 minutes on one GPU), written to $RESULTS as JSON:
#   1. rnnl2 against the hand-written loop on CUDA (seed model, cuDNN)      target: rnnl2/plain ≤ 1.05
#   2. fp32 vs bf16 (and fp32 deterministic): samples/s and test accuracy of the seed model
#   3. a λ sweep of 8 runs at --runs-per-gpu 1, 2, 4, 8: runs per hour      target: K=8 ≥ 4 × K=1
#
#   bash benchmarks/gpu.sh                 # RESULTS=gpu-results.json by default; GPU 0
#   RESULTS=$OUT/gpu.json bash benchmarks/gpu.sh
#
# Nothing here runs without a CUDA device: the script stops at once when torch sees none.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-gpu-results.json}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
PY=${PYTHON:-python}
EPOCHS=${EPOCHS:-6}

$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
nvidia-smi -L | head -1 | tee "$WORK/card.txt"
started=$(date +%s)

echo "== 1. overhead against the plain loop (seed model, cuDNN)"
timeout 200 $PY benchmarks/overhead.py overhead --device cuda --runs 3 --epochs 4 | tee "$WORK/overhead.txt"

echo "== 2. precision: fp32, bf16, fp32 deterministic (seed model, $EPOCHS epochs)"
for variant in "fp32 false" "bf16 false" "fp32 true"; do
  set -- $variant
  timeout 150 $PY -m rnnl2 train configs/seed_lstm.yaml --runs-dir "$WORK/precision" -q --json \
    --set device=cuda --set train.epochs="$EPOCHS" --set train.precision="$1" --set train.deterministic="$2" \
    > "$WORK/precision-$1-$2.json"
done

echo "== 3. lambda sweep, 8 runs x 3 epochs, at --runs-per-gpu 1 2 4 8"
for k in 1 2 4 8; do
  t0=$(date +%s.%N)
  timeout 200 $PY -m rnnl2 sweep configs/seed_lstm.yaml --grid "l2.lambda=logspace(-6,-2,8)" \
    --set device=cuda --set train.epochs=3 --runs-per-gpu "$k" --sweep-dir "$WORK/sweep-$k" -q > /dev/null
  echo "$k $t0 $(date +%s.%N)" | tee -a "$WORK/sweeps.txt"
done

WORK=$WORK RESULTS=$RESULTS STARTED=$started $PY - <<'EOF'
import json, os, time
from pathlib import Path

work = Path(os.environ["WORK"])
text = (work / "overhead.txt").read_text()
overhead = json.loads(text[text.index("{"):])  # overhead.py prints its result as the last JSON object
precision = {}
for path in sorted(work.glob("precision-*.json")):
    summary = json.loads(path.read_text())
    rows = [json.loads(l) for l in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["samples_per_s"] for r in rows[1:]) or [rows[0]["samples_per_s"]]
    precision[path.stem.removeprefix("precision-")] = {
        "median_samples_per_s": rates[len(rates) // 2],
        "test_accuracy": summary.get("test_accuracy"),
        "test_loss": summary.get("test_loss"),
        "wall_seconds": summary["wall_seconds"],
    }
sweeps = {}
for line in (work / "sweeps.txt").read_text().splitlines():
    k, start, end = line.split()
    seconds = float(end) - float(start)
    sweeps[k] = {"wall_s": seconds, "runs_per_hour": 8 * 3600 / seconds}
result = {
    "card": (work / "card.txt").read_text().strip(),
    "overhead": overhead,
    "precision": precision,
    "bf16_speedup": precision["bf16-false"]["median_samples_per_s"] / precision["fp32-false"]["median_samples_per_s"],
    "deterministic_cost": precision["fp32-false"]["median_samples_per_s"] / precision["fp32-true"]["median_samples_per_s"],
    "sweeps": sweeps,
    "k8_over_k1": sweeps["8"]["runs_per_hour"] / sweeps["1"]["runs_per_hour"],
    "total_seconds": time.time() - int(os.environ["STARTED"]),
}
Path(os.environ["RESULTS"]).write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
EOF
