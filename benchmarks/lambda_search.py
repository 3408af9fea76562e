"""Choosing λ: search against the grid, per task and seed, through the CLI as a user runs it.

Methods (the selection metric is each task's validation metric; nobody looks at test):
- grid:        8 λ including 0, every run to the end; `grid (hindsight)` is its best λ *by test*,
               the reference every regret is measured from; `grid (val)` is what a user of the
               grid would pick;
- sh-random:   `rnnl2 tune --sampler random` with successive halving (eta 3, the default first
               rung: max-epochs ÷ 9, i.e. 3 of 27 epochs on seed_overfit, 1 of 9 on trec_small and
               etth1_small);
- sh-tpe:      the same with `--sampler tpe` (Optuna);
- hb-random:   `--scheduler hyperband`: bracket j starts at rung j, the last trains every trial to the end;
- shb-random:  sh-random whose first rung is one epoch past the best epoch of the grid's λ = 0
               run (`--first-rung-from`); that run's epochs count in its cost;
- pbt-N:       `--scheduler pbt --trials N`: a population of N random λ, trained to the end; every
               max-epochs ÷ 5 epochs the worst quarter copies a best member and perturbs its λ
               (costs N runs: N/8 of the grid's epochs);
- late:        late-λ: a λ = 0 run that stops 2 epochs past its best epoch p, then `rnnl2 fork` of it at
               p once per λ ∈ {1e-4 … 1e-1} (7), each continued for max-epochs ÷ 5 epochs with its λ;
               the best by validation (costs p + 2 + 7 × max-epochs ÷ 5 epochs, about ⅓ of the grid's);
- late-tune:   the same as one `rnnl2 tune --scheduler late --sampler grid --no-refit` (forks in warm workers);
- late-refit:  `tune --scheduler late` over λ ∈ {1e-4, 1e-3, 1e-2, 1e-1}, then the best fork's λ from
               scratch (the refit); the best of trunk, forks and refit by validation;
- adaptive-*:  one `rnnl2 train` with `l2.adapt: hypergradient` from λ₀ ∈ {1e-7, 1e-5, 1e-3}: the
               hyper-loss on a held-out 10 % of the training split (`-train`) or on the validation
               split (`-val`), from the first step or once validation stops improving (`-plateau`),
               through the last step or at the stationary point (`-implicit`); see ADAPTIVE.
The search methods run at two budgets: the grid's total epochs (8 × max-epochs) and one third of
it; the number of trials is the largest whose planned epochs fit the budget (`tune --dry-run
--json`). Regret = how far the chosen config's test metric is behind the best grid λ's: accuracy
points, or percent of the best for a loss (etth1_small's test MSE, shakespeare_word_small's test
perplexity). Every folder is kept under
--out, so an interrupted benchmark continues where it stopped (sweeps and tunes resume, a stopped
run resumes from its last.pt, finished runs are not retrained).

    RNNL2_DATA=../shared/data python benchmarks/lambda_search.py --seeds 0 1 2
    RNNL2_DATA=../shared/data python benchmarks/lambda_search.py --tasks etth1_small --jobs 1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

from run_folder import rnnl2, train_args

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"
GRID = [0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
SPACE = "l2.lambda=0|loguniform(1e-6,1e-1)"
LAMBDA0 = [1e-7, 1e-5, 1e-3]
ADAPTIVE = {  # method → the l2.adapt settings beside method=hypergradient (defaults otherwise)
    "adaptive-train": ["l2.adapt.holdout=train"],  # 10 % of the training split held out (the first form)
    "adaptive-val": ["l2.adapt.holdout=val"],  # the validation split: the grid's own footing
    "adaptive-val-plateau": ["l2.adapt.holdout=val", "l2.adapt.start=plateau", "l2.adapt.every=2", "l2.adapt.lr=0.1"],
    "adaptive-val-implicit": ["l2.adapt.holdout=val", "l2.adapt.horizon=implicit"],
}
PBT = {"pbt-3": 3, "pbt-4": 4, "pbt-8": 8}  # method → population
LATE = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]  # late-λ: the forks' λ (L2 from late on needs a larger λ)
LATE_DECADE = [1e-4, 1e-3, 1e-2, 1e-1]  # late-refit: a decade apart, so the forks and the refit fit in ⅓ of the grid
LATE_PATIENCE = 2  # the λ = 0 trunk stops this many epochs after its best
TASKS = {  # config, max epochs, selection metric, test metric, whether higher is better
    "seed_overfit": ("seed_overfit.yaml", 27, "val_accuracy", "test_accuracy", True),
    "trec_small": ("trec_small.yaml", 9, "val_accuracy", "test_accuracy", True),
    "etth1_small": ("etth1_small.yaml", 9, "val_loss", "test_loss", False),
    "shakespeare_word_small": ("shakespeare_word_small.yaml", 9, "val_loss", "test_perplexity", False),
}


def regret(best: float, chosen: float, higher: bool) -> float:
    """Accuracy: points behind the best (100 × difference); a loss: percent above the best."""
    return 100 * (best - chosen) if higher else 100 * (chosen - best) / best


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def run_lambda(run_dir: Path) -> float:
    import yaml

    return float((yaml.safe_load((run_dir / "config.yaml").read_text()).get("l2") or {}).get("lambda", 0.0))


def manifest_wall(sweep_dir: Path) -> float:
    """A sweep's wall time from its manifest: first start to last finish (survives reruns)."""
    records = [json.loads(line) for line in (sweep_dir / "sweep.jsonl").read_text().splitlines() if line.strip()]
    latest = {}
    for record in records:
        latest[record["name"]] = record
    starts = [r["started"] for r in latest.values() if r.get("started")]
    ends = [r["finished"] for r in latest.values() if r.get("finished")]
    return max(ends) - min(starts)


def grid(task: str, seed: int, out: Path, jobs: int, threads: int) -> dict:
    config, epochs, val_metric, test_metric, higher = TASKS[task]
    folder = out / task / f"grid-seed{seed}"
    grid_values = ",".join(str(v) for v in GRID)
    rnnl2(
        "sweep", str(CONFIGS / config), "--grid", f"l2.lambda={grid_values}", "--set", f"seed={seed}",
        "--jobs", str(jobs), "--threads", str(threads), "--sweep-dir", str(folder), "-q",
    )  # fmt: skip
    runs = []
    for summary_path in sorted(folder.glob("*/summary.json")):
        summary = read_json(summary_path)
        runs.append(
            {
                "lambda": run_lambda(summary_path.parent),
                "val": summary[val_metric],
                "test": summary[test_metric],
                "run_dir": str(summary_path.parent),
                "epochs": summary["epochs_run"],
                "seconds": summary["wall_seconds"],
            }
        )
    pick = max if higher else min
    by_val = pick(runs, key=lambda r: r["val"])
    by_test = pick(runs, key=lambda r: r["test"])
    return {
        "runs": runs,
        "val_choice": by_val,
        "best": by_test,
        "epochs": sum(read_json(p)["epochs_run"] for p in folder.glob("*/summary.json")),
        "wall": manifest_wall(folder),
        "run_seconds": statistics.mean(read_json(p)["wall_seconds"] for p in folder.glob("*/summary.json")),
    }


def tune_args(
    task: str,
    seed: int,
    sampler: str,
    trials: int,
    folder: Path,
    jobs: int,
    threads: int,
    scheduler: str = "halving",
    extra: tuple[str, ...] = (),
) -> list[str]:
    config, epochs, *_ = TASKS[task]
    return [
        "tune", str(CONFIGS / config), "--space", SPACE, "--sampler", sampler, "--trials", str(trials),
        "--scheduler", scheduler,
        "--seed", str(seed), "--set", f"seed={seed}", "--eta", "3",
        "--max-epochs", str(epochs), "--jobs", str(jobs), "--threads", str(threads),
        "--tune-dir", str(folder), "--json", "-q", *extra,
    ]  # fmt: skip


def trials_for(
    task: str,
    budget: int,
    sampler: str,
    jobs: int,
    threads: int,
    scratch: Path,
    scheduler: str = "halving",
    extra: tuple[str, ...] = (),
) -> tuple[int, int]:
    """The largest trial count whose planned epochs fit `budget` (from `tune --dry-run --json`)."""

    def planned(trials: int) -> int:
        args = tune_args(task, 0, sampler, trials, scratch / "dry", jobs, threads, scheduler, extra)
        done = rnnl2(*args, "--dry-run")
        return int(re.search(r"at most (\d+) epochs", done.stdout).group(1))

    low, high = 1, budget
    while low < high:
        middle = (low + high + 1) // 2
        if planned(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low, planned(low)


def search(
    task: str,
    seed: int,
    sampler: str,
    trials: int,
    out: Path,
    jobs: int,
    threads: int,
    label: str,
    scheduler: str = "halving",
    extra: tuple[str, ...] = (),
) -> dict:
    test_metric = TASKS[task][3]
    folder = out / task / f"{label}-seed{seed}"
    started = time.perf_counter()
    done = rnnl2(*tune_args(task, seed, sampler, trials, folder, jobs, threads, scheduler, extra))
    wall = time.perf_counter() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    chosen = Path(result["selection"]["run_dir"])
    summary = read_json(chosen / "summary.json")
    timing = out / task / f"{label}-seed{seed}.wall"  # the first, complete run's wall time
    if not timing.exists() or result.get("trained_now"):
        timing.write_text(str(wall))
    return {
        "lambda": run_lambda(chosen),
        "test": summary[test_metric],
        "epochs": result["epochs_used"],
        "wall": float(timing.read_text()),
        "trials": trials,
    }


def adaptive(task: str, seed: int, method: str, lambda0: float, out: Path, threads: int) -> dict:
    config, _, _, test_metric, _ = TASKS[task]
    folder = out / task / f"{method}-{lambda0:g}-seed{seed}"
    overrides = [f"seed={seed}", f"l2.lambda={lambda0}", "l2.adapt.method=hypergradient", *ADAPTIVE[method]]
    args = train_args(CONFIGS / config, overrides, folder)
    if args is not None:
        rnnl2(*args, "--threads", str(threads), "-q")
    summary = read_json(folder / "summary.json")
    return {
        "lambda0": lambda0,
        "lambda_final": summary.get("lambda_final"),
        "test": summary[test_metric],
        "epochs": summary["epochs_run"],
        "wall": summary["wall_seconds"],
    }


def late(task: str, seed: int, out: Path, jobs: int, threads: int) -> dict:
    """late-λ, as docs/search.md scripts it: a λ = 0 run stopped LATE_PATIENCE epochs past its
    best epoch p; `rnnl2 fork` of it at p once per λ in LATE, each continued with its λ for
    max-epochs ÷ 5 epochs (at least 1); the best by validation of the trunk and the forks."""
    from concurrent.futures import ThreadPoolExecutor

    config, epochs, val_metric, test_metric, higher = TASKS[task]
    folder = out / task / f"late-seed{seed}"
    started = time.perf_counter()
    trunk_dir = folder / "trunk-l2.lambda=0"
    trunk_args = train_args(
        CONFIGS / config,
        [f"seed={seed}", "l2.lambda=0", f"train.early_stopping.patience={LATE_PATIENCE}"],
        trunk_dir,
    )
    if trunk_args is not None:
        rnnl2(*trunk_args, "--threads", str(threads), "-q")
    trunk = read_json(trunk_dir / "summary.json")
    p, length = trunk["best_epoch"], max(1, -(-epochs // 5))

    def branch(lam: float) -> dict:
        run_dir = folder / f"fork-l2.lambda={lam:g}"
        if not (run_dir / "summary.json").is_file() or read_json(run_dir / "summary.json")["status"] == "paused":
            if not run_dir.exists():
                rnnl2("fork", str(trunk_dir), str(run_dir))
            sets = ["--set", f"l2.lambda={lam}", "--set", f"train.epochs={p + length}"]
            rnnl2("train", "--resume", str(run_dir), "--force", *sets, "--threads", str(threads), "-q")
            return read_json(run_dir / "summary.json") | {"lambda": lam, "run_dir": str(run_dir), "trained": True}
        return read_json(run_dir / "summary.json") | {"lambda": lam, "run_dir": str(run_dir), "trained": False}

    with ThreadPoolExecutor(jobs) as pool:
        forks = list(pool.map(branch, LATE))
    timing = out / task / f"late-seed{seed}.wall"  # the first, complete run's wall time, not a rerun's read
    if not timing.exists() or trunk_args is not None or any(f["trained"] for f in forks):
        timing.write_text(str(time.perf_counter() - started))
    candidates = [trunk | {"lambda": 0.0, "run_dir": str(trunk_dir)}, *forks]
    pick = max if higher else min
    chosen = pick(candidates, key=lambda c: c[val_metric])
    return {
        "lambda": chosen["lambda"],
        "val": chosen[val_metric],
        "test": chosen[test_metric],
        "run_dir": chosen["run_dir"],
        "epochs": trunk["epochs_run"] + sum(f["epochs_run"] - p for f in forks),
        "wall": float(timing.read_text()),
        "branch_epoch": p,
    }


def late_tune(
    task: str, seed: int, out: Path, jobs: int, threads: int, patience: int = LATE_PATIENCE, refit: bool = False
) -> dict:
    """late-tune: `late`'s recipe as one `rnnl2 tune --scheduler late --no-refit` (the same trunk,
    λ list and fork length), in warm workers: its choice should equal `late`'s, its wall time less.
    With `refit` (late-refit): the decade list LATE_DECADE, and the best fork's λ from scratch too."""
    config, epochs, _, test_metric, _ = TASKS[task]
    label = ("late-refit" if refit else "late-tune") + ("" if patience == LATE_PATIENCE else f"-p{patience}")
    folder = out / task / f"{label}-seed{seed}"
    space = "l2.lambda=choice(" + ",".join(f"{v:g}" for v in (LATE_DECADE if refit else LATE)) + ")"
    started = time.perf_counter()
    done = rnnl2(
        "tune", str(CONFIGS / config), "--space", space, "--sampler", "grid", "--scheduler", "late",
        "--set", f"seed={seed}", "--set", "l2.lambda=0", "--trunk-patience", str(patience),
        "--refit" if refit else "--no-refit",
        "--max-epochs", str(epochs), "--jobs", str(jobs), "--threads", str(threads),
        "--tune-dir", str(folder), "--json", "-q",
    )  # fmt: skip
    wall = time.perf_counter() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    chosen = Path(result["selection"]["run_dir"])
    timing = out / task / f"{label}-seed{seed}.wall"  # the first, complete run's wall time
    if not timing.exists() or result.get("trained_now"):
        timing.write_text(str(wall))
    return {
        "lambda": run_lambda(chosen),
        "test": read_json(chosen / "summary.json")[test_metric],
        "run_dir": str(chosen),
        "epochs": result["epochs_used"],
        "wall": float(timing.read_text()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["grid", "sh-random", "sh-tpe", "hb-random", *ADAPTIVE],
        choices=[
            "grid",
            "sh-random",
            "sh-tpe",
            "hb-random",
            "hb-tpe",
            "shb-random",
            *PBT,
            *ADAPTIVE,
            "late",
            "late-tune",
            "late-refit",
        ],
    )
    parser.add_argument("--budgets", nargs="+", default=["full", "third"], choices=["full", "third"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--late-patience", type=int, default=LATE_PATIENCE, help="late-tune: the trunk's early-stopping patience"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads per run (default: 2 ÷ --jobs, at least 1; 2 for the adaptive runs, one at a time)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "lambda_search")
    args = parser.parse_args()
    threads = args.threads or max(1, 2 // args.jobs)  # per run of a sweep or tune
    os.environ.setdefault("RNNL2_DATA", str(ROOT.parent / "shared" / "data"))
    results = args.out / "results.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        _, epochs, _, _, higher = TASKS[task]
        budgets = {"full": len(GRID) * epochs, "third": len(GRID) * epochs // 3}
        budgets = {name: budget for name, budget in budgets.items() if name in args.budgets}
        counts = {}
        for seed in args.seeds:
            reference = grid(task, seed, args.out, args.jobs, threads)
            unregularized = next(r for r in reference["runs"] if r["lambda"] == 0)
            rows = [
                {"method": "grid (val)", **reference["val_choice"], "epochs": reference["epochs"]},
                {"method": "λ = 0 (no search)", **unregularized, "epochs": epochs},
            ]
            rows[0]["wall"] = reference["wall"]
            rows[1]["wall"] = reference["run_seconds"]
            for method in [m for m in args.methods if m.startswith(("sh-", "hb-"))]:
                sampler = method[3:]
                scheduler = "hyperband" if method.startswith("hb-") else "halving"
                for budget_name, budget in budgets.items():
                    if (method, budget_name) not in counts:
                        counts[method, budget_name] = trials_for(
                            task, budget, sampler, args.jobs, threads, args.out / task, scheduler
                        )
                    trials, _ = counts[method, budget_name]
                    label = f"{method}-{budget_name}"
                    found = search(task, seed, sampler, trials, args.out, args.jobs, threads, label, scheduler)
                    rows.append({"method": label, **found})
            for method in [m for m in args.methods if m.startswith("shb-")]:
                # halving whose first rung is placed past the λ = 0 run's best epoch; that run (the
                # grid's own, trained first anyway) is counted in the method's cost
                extra = ("--first-rung-from", unregularized["run_dir"])
                for budget_name, budget in budgets.items():
                    left = budget - unregularized["epochs"]
                    trials, _ = trials_for(
                        task, left, method[4:], args.jobs, threads, args.out / task, "halving", extra
                    )
                    label = f"{method}-{budget_name}"
                    found = search(
                        task, seed, method[4:], trials, args.out, args.jobs, threads, label, "halving", extra
                    )
                    found["epochs"] += unregularized["epochs"]
                    found["wall"] += unregularized["seconds"]
                    rows.append({"method": label, **found})
            for method in [m for m in args.methods if m in PBT]:
                population = PBT[method]
                found = search(task, seed, "random", population, args.out, args.jobs, threads, method, "pbt")
                rows.append({"method": method, **found})
            if "late" in args.methods:
                rows.append({"method": "late-λ", **late(task, seed, args.out, args.jobs, threads)})
            if "late-tune" in args.methods:
                found = late_tune(task, seed, args.out, args.jobs, threads, args.late_patience)
                suffix = "" if args.late_patience == LATE_PATIENCE else f" (patience {args.late_patience})"
                rows.append({"method": f"late-λ tune{suffix}", **found})
            if "late-refit" in args.methods:
                found = late_tune(task, seed, args.out, args.jobs, threads, args.late_patience, refit=True)
                rows.append({"method": "late-λ + refit (decades)", **found})
            for method in [m for m in args.methods if m in ADAPTIVE]:
                for lambda0 in LAMBDA0:
                    rows.append(
                        {
                            "method": f"{method} λ₀={lambda0:g}",
                            **adaptive(task, seed, method, lambda0, args.out, args.threads or 2),
                        }
                    )
            for row in rows:
                row.update(
                    task=task,
                    seed=seed,
                    best_grid_lambda=reference["best"]["lambda"],
                    best_grid_test=reference["best"]["test"],
                    regret=regret(reference["best"]["test"], row["test"], higher),
                    regret_unit="points" if higher else "%",
                    grid_epochs=reference["epochs"],
                    grid_wall=reference["wall"],
                    run_seconds=reference["run_seconds"],
                )
                with results.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print_table(results)


def print_table(results: Path) -> None:
    """Median over seeds per task and method: regret, epochs, wall time; the λ₀ spread."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    latest = {(r["task"], r["seed"], r["method"]): r for r in rows}
    groups: dict[tuple[str, str], list[dict]] = {}
    for (task, _, method), row in sorted(latest.items()):
        groups.setdefault((task, method), []).append(row)
    print(
        "| task | method | seeds | regret (accuracy points, or % for a loss), median [max] | chosen λ (median) | epochs (× grid) "
        "| wall (× grid) | wall (× one grid run) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (task, method), group in groups.items():
        regrets = [r.get("regret", r.get("regret_points")) for r in group]  # older rows: regret_points
        lam = statistics.median(r.get("lambda", r.get("lambda_final")) or 0 for r in group)
        epochs = statistics.median(r["epochs"] / r["grid_epochs"] for r in group)
        wall = statistics.median(r["wall"] / r["grid_wall"] for r in group)
        runs = statistics.median(r["wall"] / r["run_seconds"] for r in group)
        print(
            f"| {task} | {method} | {len(group)} | {statistics.median(regrets):.2f} [{max(regrets):.2f}] | "
            f"{lam:.2g} | {epochs:.2f} | {wall:.2f} | {runs:.1f} |"
        )


if __name__ == "__main__":
    main()
