#!/usr/bin/env bash
# The GPU figures of issue 11 in one go (≈ 10 minutes on one GPU, unmeasured since part 6 joined), written to $RESULTS as JSON:
#   1. rnnl2 against the hand-written loop on CUDA (seed model, cuDNN)      target: rnnl2/plain ≤ 1.05
#   2. fp32 vs bf16 (and fp32 deterministic): samples/s and test accuracy of the seed model
#   3. a λ sweep of 8 runs at --runs-per-gpu 1, 2, 4, 8: runs per hour      target: K=8 ≥ 4 × K=1
#   5. one step of K fused λ-grid members against K separate models (benchmarks/fused_step.py)
#   6. `sweep --fused` of K = 8, 32 and 128 λ (128: four groups of 32) against the same sweep in
#      warm workers, end to end (benchmarks/fused_sweep.py; --runs-per-gpu 8)   target: ≥ 2 × runs/h
#
#   bash benchmarks/gpu.sh                 # RESULTS=cuda-results.json by default; GPU 0
#   RESULTS=$OUT/gpu.json bash benchmarks/gpu.sh
#
# DEVICE=cpu gives the same figures on the CPU, where they stand in for a GPU (174 s measured on 2
# cores): part 1 is skipped (benchmarks/overhead.py measures it on the CPU), part 3 runs at --jobs
# 1 and 2 (one torch thread per run) instead of --runs-per-gpu, and part 4 times one run on 2 gloo
# ranks (--nproc 2, one thread each) against one process with 2 threads.
# With DEVICE=cuda (the default) the script stops at once when torch sees no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
RESULTS=${RESULTS:-$DEVICE-results.json}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python}
EPOCHS=${EPOCHS:-6}
started=$(date +%s)

if [ "$DEVICE" = cuda ]; then
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
  nvidia-smi -L | head -1 | tee "$WORK/card.txt"
  SLOTS="1 2 4 8"
  SLOT_OPTION=--runs-per-gpu
elif [ "$DEVICE" = cpu ]; then
  echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores" | tee "$WORK/card.txt"
  SLOTS="1 2"
  SLOT_OPTION=--jobs
else
  echo "DEVICE must be cuda or cpu, got $DEVICE" >&2
  exit 2
fi

if [ "$DEVICE" = cuda ]; then
  echo "== 1. overhead against the plain loop (seed model, cuDNN)"
  timeout 200 $PY benchmarks/overhead.py overhead --device cuda --runs 3 --epochs 4 | tee "$WORK/overhead.txt"
fi

echo "== 2. precision: fp32, bf16, fp32 deterministic (seed model, $EPOCHS epochs)"
for variant in "fp32 false" "bf16 false" "fp32 true"; do
  set -- $variant
  timeout 150 $PY -m rnnl2 train configs/seed_lstm.yaml --runs-dir "$WORK/precision" -q --json \
    --set device="$DEVICE" --set train.epochs="$EPOCHS" --set train.precision="$1" --set train.deterministic="$2" \
    > "$WORK/precision-$1-$2.json"
done

echo "== 3. lambda sweep, 8 runs x 3 epochs, at $SLOT_OPTION $SLOTS"
for k in $SLOTS; do
  threads=()
  [ "$DEVICE" = cpu ] && threads=(--threads 1)
  t0=$(date +%s.%N)
  timeout 300 $PY -m rnnl2 sweep configs/seed_lstm.yaml --grid "l2.lambda=logspace(-6,-2,8)" "${threads[@]}" \
    --set device="$DEVICE" --set train.epochs=3 "$SLOT_OPTION" "$k" --sweep-dir "$WORK/sweep-$k" -q > /dev/null
  echo "$k $t0 $(date +%s.%N)" | tee -a "$WORK/sweeps.txt"
done

if [ "$DEVICE" = cpu ]; then
  echo "== 4. one run on 2 gloo ranks (1 thread each) against one process (2 threads), $EPOCHS epochs"
  for nproc in 1 2; do
    threads=$((2 / nproc))
    timeout 300 $PY -m rnnl2 train configs/seed_lstm.yaml --runs-dir "$WORK/ddp" -q --json --nproc "$nproc" \
      --threads "$threads" --set device=cpu --set train.epochs="$EPOCHS" > "$WORK/ddp-$nproc.json"
  done
fi

# 5. one training step of K λ-grid members fused (a bmm-stacked LSTM, and one block-diagonal wide
#    nn.LSTM up to K = 32; vmap has no rule for aten::lstm) against K separate models, K = 8, 32, 128
#    on CUDA (8 on the CPU): is `sweep --fused` worth building?
if [ "$DEVICE" = cuda ]; then MEMBERS="8 32 128"; else MEMBERS="8"; fi
timeout 300 $PY benchmarks/fused_step.py --members $MEMBERS --device "$DEVICE" --threads "${FUSED_THREADS:-2}" \
  | tee "$WORK/fused.txt"

# 6. the λ grid end to end: `sweep --fused` against warm workers (K = 8, 32, 128 on CUDA, 8 on the CPU)
if [ "$DEVICE" = cuda ]; then
  timeout 400 $PY benchmarks/fused_sweep.py --members 8 32 128 --epochs 1 --repeats 1 --device cuda --runs-per-gpu 8 \
    | tee "$WORK/fused_sweep.txt"
else
  timeout 400 $PY benchmarks/fused_sweep.py --members 8 --epochs 1 --repeats 1 | tee "$WORK/fused_sweep.txt"
fi

WORK=$WORK RESULTS=$RESULTS STARTED=$started DEVICE=$DEVICE $PY - <<'EOF'
import json, os, time
from pathlib import Path

work = Path(os.environ["WORK"])
overhead = None
if (work / "overhead.txt").exists():
    text = (work / "overhead.txt").read_text()
    overhead = json.loads(text[text.index("{"):])  # overhead.py prints its result as the last JSON object


def median_rate(summary: dict) -> float:
    rows = [json.loads(l) for l in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["samples_per_s"] for r in rows[1:]) or [rows[0]["samples_per_s"]]  # epoch 1 warms up
    return rates[len(rates) // 2]


precision = {}
for path in sorted(work.glob("precision-*.json")):
    summary = json.loads(path.read_text())
    precision[path.stem.removeprefix("precision-")] = {
        "median_samples_per_s": median_rate(summary),
        "test_accuracy": summary.get("test_accuracy"),
        "test_loss": summary.get("test_loss"),
        "wall_seconds": summary["wall_seconds"],
    }
sweeps = {}
for line in (work / "sweeps.txt").read_text().splitlines():
    k, start, end = line.split()
    seconds = float(end) - float(start)
    sweeps[k] = {"wall_s": seconds, "runs_per_hour": 8 * 3600 / seconds}
ddp = {}
for path in sorted(work.glob("ddp-*.json")):
    summary = json.loads(path.read_text())
    ddp[path.stem.removeprefix("ddp-")] = {
        "median_samples_per_s": median_rate(summary),
        "test_accuracy": summary.get("test_accuracy"),
        "wall_seconds": summary["wall_seconds"],
    }
first, last = sweeps[min(sweeps, key=int)], sweeps[max(sweeps, key=int)]
result = {
    "device": os.environ["DEVICE"],
    "card": (work / "card.txt").read_text().strip(),
    "overhead": overhead,
    "precision": precision,
    "bf16_speedup": precision["bf16-false"]["median_samples_per_s"] / precision["fp32-false"]["median_samples_per_s"],
    "deterministic_cost": precision["fp32-false"]["median_samples_per_s"] / precision["fp32-true"]["median_samples_per_s"],
    "sweeps": sweeps,
    "most_over_one_slot": last["runs_per_hour"] / first["runs_per_hour"],  # K=8 over K=1 on CUDA
    "ddp": ddp,
    "fused_step": (work / "fused.txt").read_text().splitlines(),
    "fused_sweep": (work / "fused_sweep.txt").read_text().splitlines(),
    "total_seconds": time.time() - int(os.environ["STARTED"]),
}
Path(os.environ["RESULTS"]).write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
EOF
