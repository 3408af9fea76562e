"""One run on two gloo ranks (torchrun, on the CPU) equals one process with the same global batch:
metrics and final weights to 1e-5, for SGD and Adam in each L2 mode and for a stateful text_lm;
a job SIGKILLed mid-epoch resumes (`--resume --nproc 2`) to the same end. The sharding itself is
tested directly. Run as a script, this file is what each rank executes."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from helpers import GLOO_ABORT, TINY_TAGGING, rnnl2_argv, run_two_ranks, write_config

TIMING = ("seconds", "samples_per_s")
LM_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 30


def equivalence_cases(folder: Path) -> dict[str, dict]:
    """Raw configs: 64 sequences in global batches of 15 (7 + 8 rows per rank, then a short batch of
    4: 2 + 2), mid-epoch checkpoints every 2 steps, no dropout; and a stateful text_lm."""
    base = copy.deepcopy(TINY_TAGGING) | {"l2": {"lambda": 0.1}}
    base["train"] = {"epochs": 2, "batch_size": 15, "checkpoint_every_steps": 2}
    cases = {}
    for name, lr in (("sgd", 0.1), ("adam", 0.01)):
        for mode in ("penalty", "weight_decay", "decoupled"):
            cases[f"{name}-{mode}"] = base | {
                "optimizer": {"name": name, "lr": lr},
                "l2": {"lambda": 0.1, "mode": mode},
            }
    cases["sgd-penalty-clip"] = cases["sgd-penalty"] | {"train": {**base["train"], "clip_grad_norm": 0.05}}
    cases["text-lm"] = {
        "name": "lm",
        "device": "cpu",
        "model": {"hidden_size": 8, "embedding_dim": 4},
        "data": {"kind": "text_lm", "path": str(folder / "text.txt"), "ratios": [0.8, 0.1, 0.1], "bptt": 5},
        "l2": {"lambda": 0.01},
        "train": {"epochs": 2, "batch_size": 5, "checkpoint_every_steps": 3},
    }
    return cases


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Two CPU ranks through `python -m torch.distributed.run` on a free local port."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def rows_without_timing(run_dir: Path) -> list[dict]:
    from rnnl2.runs import read_metrics

    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(run_dir)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_close_runs(got: Path, expected: Path, atol: float = 1e-5) -> None:
    got_rows, expected_rows = rows_without_timing(got), rows_without_timing(expected)
    assert len(got_rows) == len(expected_rows)
    for a, b in zip(got_rows, expected_rows):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=atol, rel=atol), key
    w_got, w_expected = weights(got), weights(expected)
    for name in w_expected:
        assert torch.allclose(w_got[name], w_expected[name], atol=atol, rtol=0), name


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Every equivalence case trained once by one torchrun job of two ranks (one start-up for all)."""
    for attempt in range(2):
        folder = tmp_path_factory.mktemp("ddp")
        (folder / "text.txt").write_text(LM_TEXT)
        done = torchrun(__file__, "equivalence", str(folder))
        if done.returncode == 0 or GLOO_ABORT not in done.stderr:
            break
        warnings.warn(f"attempt {attempt + 1}: a rank aborted inside gloo ({GLOO_ABORT!r}); once more", stacklevel=1)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def one_process(two_ranks: Path) -> Path:
    """The same cases in this process (world 1)."""
    from rnnl2.config import validate_config
    from rnnl2.train import run

    torch.set_num_threads(1)
    for name, raw in equivalence_cases(two_ranks).items():
        run(validate_config(raw), run_dir=two_ranks / "single" / name)
    return two_ranks / "single"


@pytest.mark.parametrize("case", list(equivalence_cases(Path("."))))
def test_two_gloo_ranks_equal_one_process(two_ranks, one_process, case):
    assert_close_runs(two_ranks / "ranks" / case, one_process / case)
    summary = json.loads((two_ranks / "ranks" / case / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["status"] == "completed"


def test_only_rank_zero_writes(two_ranks):
    """One run folder per case, nothing else: the other rank made no folder of its own."""
    assert sorted(p.name for p in (two_ranks / "ranks").iterdir()) == sorted(equivalence_cases(two_ranks))


def test_sigkilled_job_resumes_with_nproc_to_the_uninterrupted_end(two_ranks, tmp_path):
    """The whole job (torchrun and both ranks) is SIGKILLed in epoch 2 after step 3; `rnnl2 train
    --resume RUN --nproc 2` continues from last.pt (step 1 of epoch 2) and ends bit-identical to
    the uninterrupted job."""
    run_dir, marker = tmp_path / "killed", tmp_path / "step3"
    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + [__file__, "kill", str(two_ranks), str(run_dir), str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 240
    while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), f"the job ended ({job.poll()}) before step 3 of epoch 2"
    for pid in [job.pid, *descendants(job.pid)]:
        os.kill(pid, signal.SIGKILL)
    job.wait(timeout=30)
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["resume"]["step_in_epoch"]) == (1, 1)  # global step 6 of 10
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = run_two_ranks(
        [sys.executable, "-m", "rnnl2", "train", "--resume", str(run_dir), "--nproc", "2", "-q"], timeout=240, env=env
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)  # rank 0 alone prints
    reference = two_ranks / "ranks" / "adam-penalty"
    assert rows_without_timing(run_dir) == rows_without_timing(reference)
    expected, got = weights(reference), weights(run_dir)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: torchrun's ranks)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


ABORT_AT_EXIT = """
import atexit, os
if os.environ.get("RANK") == "1":
    if os.environ.get("ABORT_BEFORE_DONE"):
        os.environ.pop("RNNL2_RANKS_DONE", None)  # this rank never says its command is done
    atexit.register(os.abort)  # SIGABRT as the interpreter exits, as a gloo teardown abort does
"""
"""A sitecustomize for the ranks: rank 1 dies of SIGABRT after its command returned."""


@pytest.mark.parametrize("before_done", [False, True], ids=["after-done", "before-done"])
def test_a_rank_aborting_after_its_run_is_done_does_not_fail_the_job(tmp_path, before_done):
    """Gloo can abort a rank in teardown after the run finished (pytorch#65231). A rank that had
    marked its command done leaves a complete, reported run: exit 0, the folder on stdout, a note.
    One that dies before its mark is a lost rank, as any signal is: exit 1, named."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(ABORT_AT_EXIT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    if before_done:
        env["ABORT_BEFORE_DONE"] = "1"
    run_dir = tmp_path / "ranks"
    argv = rnnl2_argv("train", str(write_config(tmp_path, TINY_TAGGING)), "--nproc", "2", "--run-dir", str(run_dir))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    if before_done:
        assert done.returncode == 1, done.stderr
        assert "error: rank 1 was killed by SIGABRT" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == str(run_dir)
        assert "note: rank 1 died leaving the process group, after the run finished" in done.stderr


@pytest.mark.parametrize("rows", [15, 4, 1])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_cover_the_batch_and_their_weights_sum_to_one(rows, world):
    """Contiguous, disjoint shards; weights c_r/c sum to 1 (a rank without rows trains one at weight 0)."""
    from rnnl2.data import Batch
    from rnnl2.distributed import Ranks

    targets = torch.arange(rows * 5).view(rows, 5) % 3
    targets[0, 3:] = -100  # padded steps count for nothing
    batch = Batch(torch.randn(rows, 5, 2), targets, None)
    shards = [Ranks(rank, world).shard(batch, "tagging") for rank in range(world)]
    assert sum(float(share) for _, share, _ in shards) == pytest.approx(1.0)
    assert all(size == rows for _, _, size in shards)
    taken = [part.targets for part, share, _ in shards if float(share) > 0]
    assert torch.equal(torch.cat(taken), targets)


def test_hidden_rows_split_as_the_shards_do():
    """A saved whole-batch hidden state splits into the rows each rank carries."""
    from rnnl2.distributed import Ranks

    hidden = (torch.arange(2 * 5 * 3.0).view(2, 5, 3), torch.zeros(2, 5, 3))
    parts = [Ranks(rank, 2).split_hidden(hidden) for rank in range(2)]
    assert [p[0].shape[1] for p in parts] == [2, 3]
    assert torch.equal(torch.cat([p[0] for p in parts], dim=1), hidden[0])


def test_options_for_the_launcher_are_not_passed_on():
    from rnnl2.distributed import without_option

    argv = ["train", "c.yaml", "--nproc", "2", "--set", "a=1", "--nproc=3", "-q"]
    assert without_option(argv, "--nproc") == ["train", "c.yaml", "--set", "a=1", "-q"]


def test_a_global_batch_smaller_than_the_world_is_refused():
    from rnnl2.config import validate_config
    from rnnl2.distributed import Ranks, check_distributed
    from rnnl2.errors import ConfigError

    cfg = validate_config(TINY_TAGGING | {"train": {"batch_size": 1}})
    with pytest.raises(ConfigError, match="global batch"):
        check_distributed(Ranks(0, 2), cfg)


# ------------------------------------------------------------------ what each rank runs


class WaitForKill:
    """Observer of rank 0: in epoch 2 after step 3 (last.pt is from step 1 of that epoch), tell the
    test and wait for its SIGKILL."""

    def __init__(self, marker: Path):
        self.epoch, self.marker = 0, marker

    def on_start(self, info): ...
    def on_epoch_end(self, row): ...

    def on_epoch_start(self, epoch, steps):
        self.epoch = epoch

    def on_step(self, step, loss):
        if self.epoch == 2 and step == 3:
            self.marker.write_text("")
            time.sleep(600)


def main(mode: str, folder: Path, run_dir: Path | None = None, marker: Path | None = None) -> None:
    from rnnl2.config import validate_config
    from rnnl2.train import run

    torch.set_num_threads(1)
    cases = equivalence_cases(folder)
    if mode == "equivalence":
        for name, raw in cases.items():
            run(validate_config(raw), run_dir=folder / "ranks" / name)
    else:
        run(validate_config(cases["adam-penalty"]), run_dir=run_dir, observer=WaitForKill(marker))


if __name__ == "__main__":
    main(sys.argv[1], *map(Path, sys.argv[2:]))
