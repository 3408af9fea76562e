"""One run on several processes (`torchrun --nproc_per_node N -m rnnl2 train CONFIG`): which rank
this process is, its shard of every global batch, the gradient all-reduce, and the sums and
decisions all ranks share. Rank 0 alone writes the run folder; a single process is world 1.

    global batch (train.batch_size rows, the single-process shuffle order)
    ┌────────── rank 0 ──────────┬────────── rank 1 ──────────┐   contiguous rows, sizes differ by ≤ 1
    loss₀ · c₀/c                  loss₁ · c₁/c                    c_r: elements rank r's mean loss averages
    backward ──► all-reduce(sum) of the gradients ──► + λ·θ once ──► clip (global norm) ──► step
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
from dataclasses import dataclass, replace
from typing import Any

import torch

from .data import Batch
from .errors import ConfigError, RunFailed
from .evaluate import IGNORE_INDEX


def loss_elements(task: str, targets: torch.Tensor) -> torch.Tensor | int:
    """How many elements the task's mean data loss averages over in `targets`."""
    if task in ("tagging", "lm"):
        return (targets != IGNORE_INDEX).sum()
    if task == "classification":
        return targets.shape[0]
    return targets.numel()


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank 0 of 1 unless started by torchrun with WORLD_SIZE > 1."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Batch, task: str) -> tuple[Batch, torch.Tensor | None, int]:
        """(this rank's rows of a global batch, its weight c_r/c, the global batch's rows).

        Weighting each rank's mean loss by its share of the global mean's elements makes the summed
        gradients exactly those of the global mean, also for a short last batch and padded targets.
        A rank left without rows (a last batch shorter than the world) trains one row at weight 0,
        so that every rank takes part in every all-reduce. Single process: (batch, None, rows)."""
        rows = batch.targets.shape[0]
        if self.world == 1:
            return batch, None, rows
        start, stop = rows * self.rank // self.world, rows * (self.rank + 1) // self.world
        total = loss_elements(task, batch.targets)
        empty = start == stop
        if empty:
            start, stop = 0, 1
        lengths = None if batch.lengths is None else batch.lengths[start:stop]
        part = Batch(batch.inputs[start:stop], batch.targets[start:stop], lengths)
        share = torch.as_tensor(loss_elements(task, part.targets), dtype=torch.float32) / torch.as_tensor(
            total, dtype=torch.float32
        ).clamp(min=1)
        return part, share * 0 if empty else share, rows

    def rows(self, rows: int) -> slice:
        """This rank's rows of a batch of `rows` (the stateful streams it carries)."""
        return slice(rows * self.rank // self.world, rows * (self.rank + 1) // self.world)

    def reduce_gradients_(self, params: list[torch.Tensor], stop: bool) -> bool:
        """Sum every gradient over the ranks in one flat all-reduce (DDP's bucket, as one); a stop
        flag rides along, so a signal on any rank stops all of them after the same step."""
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        flags = torch.tensor([1.0 if stop else 0.0], device=grads[0].device if grads else "cpu")
        flat = torch.cat([*(g.reshape(-1) for g in grads), flags])
        dist.all_reduce(flat)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
        return bool(flat[-1].item() > 0)

    def total(self, value: torch.Tensor | None) -> torch.Tensor | None:
        """The sum of `value` over the ranks (a copy; `value` itself is left as it is)."""
        if self.world == 1 or value is None:
            return value
        import torch.distributed as dist

        summed = value.clone()
        dist.all_reduce(summed)
        return summed

    def settle_(self, state: Any) -> None:
        """Make rank 0 hold the epoch's summed sums and every other rank zero, so that the sum over
        ranks stays the run's sum (what a checkpoint saves) whenever it is read again."""
        if self.world == 1:
            return
        for name in ("loss_sum", "activity_sum"):
            value = self.total(getattr(state, name))
            setattr(state, name, value if value is None or self.main else torch.zeros_like(value))

    def whole_state(self, state: Any) -> Any:
        """The TrainState as one process would hold it, for a checkpoint: the sums over the ranks and
        the hidden state of every row (a copy; `state` itself only when in one process)."""
        if self.world == 1:
            return state
        return replace(
            state,
            loss_sum=self.total(state.loss_sum),
            activity_sum=self.total(state.activity_sum),
            hidden=self.gather_hidden(state.hidden),
        )

    def take_share_(self, state: Any) -> None:
        """After a resume from a whole-run checkpoint: this rank's rows of the hidden state; the saved
        sums stay with rank 0 (the others start from zero, so the sum over ranks is the saved one)."""
        if self.world == 1:
            return
        state.hidden = self.split_hidden(state.hidden)
        if not self.main:
            for name in ("loss_sum", "activity_sum"):
                value = getattr(state, name)
                setattr(state, name, None if value is None else torch.zeros_like(value))

    def share(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object) on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_hidden(self, hidden: Any) -> Any:
        """The stateful hidden state of every rank's rows, in row order, as one process would hold it."""
        if self.world == 1 or hidden is None:
            return hidden
        if isinstance(hidden, (tuple, list)):
            return type(hidden)(self.gather_hidden(h) for h in hidden)
        import torch.distributed as dist

        sizes = [0] * self.world  # filled by the gather
        dist.all_gather_object(sizes, hidden.shape[1])
        padded = torch.zeros(hidden.shape[0], max(sizes), *hidden.shape[2:], dtype=hidden.dtype, device=hidden.device)
        padded[:, : hidden.shape[1]] = hidden  # gloo gathers equal shapes only
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:, :size] for part, size in zip(parts, sizes)], dim=1)  # (layers · dirs, batch, hidden)

    def split_hidden(self, hidden: Any) -> Any:
        """This rank's rows of a saved (whole-batch) hidden state."""
        if self.world == 1 or hidden is None:
            return hidden
        if isinstance(hidden, (tuple, list)):
            return type(hidden)(self.split_hidden(h) for h in hidden)
        return hidden[:, self.rows(hidden.shape[1])]


SINGLE = Ranks()
_ranks: Ranks | None = None


def is_main_process() -> bool:
    """Rank 0 (or no torchrun at all), read from the environment before any process group exists."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def current_ranks(device_type: str = "cpu") -> Ranks:
    """This process's Ranks: from torchrun's RANK/WORLD_SIZE (joining the process group once: gloo
    on CPU, NCCL on CUDA), else a single process."""
    global _ranks
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    if _ranks is None:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
        _ranks = Ranks(dist.get_rank(), dist.get_world_size())
    return _ranks


def check_distributed(ranks: Ranks, cfg: Any) -> None:
    """What a run on several ranks cannot do, refused before any folder is made."""
    if ranks.world == 1:
        return
    if cfg.train.batch_size < ranks.world:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is the global batch, smaller than the {ranks.world} ranks"
        )
    if cfg.l2.adapt.on:
        raise ConfigError("l2.adapt does not run on several processes yet; train it in one process")
    if cfg.device.startswith("cuda:"):
        raise ConfigError(f"device: {cfg.device} under torchrun; use cuda (each rank takes its LOCAL_RANK's GPU)")


def close_ranks(finished: bool = False) -> None:
    """Leave the process group at the end of a run (torchrun waits for every rank).

    A run that `finished` on this rank meets the others at a barrier first: a rank that tears its
    gloo pairs down while a peer is still reading them can abort inside gloo after the run is
    complete (pytorch#65231), and the launcher would report a finished run as a lost rank. A rank
    that failed skips the barrier (its peers may be gone); a barrier that finds a peer gone is
    the failure already being reported, so it is not raised again."""
    global _ranks
    if _ranks is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            if finished and _ranks.world > 1:
                try:
                    dist.barrier()
                except RuntimeError:
                    pass
            dist.destroy_process_group()
        _ranks = None


class SilentLog:
    """What ranks other than 0 log: nothing (rank 0 writes metrics.jsonl and the trackers)."""

    def append(self, row: dict[str, Any]) -> None: ...
    def rewrite(self, rows: list[dict[str, Any]]) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...


PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "gloo", "NCCL")
"""What a collective raises on the ranks left when another rank died."""


class RankLost(RunFailed):
    """Another rank of this run died (killed, crashed) in a collective: exit code 1, resumable."""


def lost_a_rank(error: BaseException, ranks: Ranks) -> bool:
    """Whether `error` is a collective failing because another rank went away."""
    return ranks.world > 1 and isinstance(error, RuntimeError) and any(text in str(error) for text in PEER_LOST)


RANKS_DONE_ENV = "RNNL2_RANKS_DONE"
"""The folder in which each rank of a `--nproc` job marks that its command finished and reported."""


def mark_rank_done() -> None:
    """Tell `launch_processes` that this rank's command finished and reported: what it does after
    (leaving the process group, the interpreter's exit) can no longer lose the run."""
    folder = os.environ.get(RANKS_DONE_ENV)
    if folder and os.path.isdir(folder):
        sys.stdout.flush()  # what this rank printed is out before it counts as reported
        sys.stderr.flush()
        open(os.path.join(folder, os.environ.get("RANK", "0")), "w").close()


def launch_processes(nproc: int, argv: list[str], cfg: Any = None) -> int:
    """`rnnl2 train ... --nproc N`: the same command on N local processes through torchrun's
    launcher (a free port on localhost); the exit code of rank 0, else of the first rank that failed.
    A config (`cfg`) is checked here first, so a refusal prints once, not once per rank; a rank
    killed by a signal is named (exit 1), the run resumable from its last checkpoint. A rank that
    dies only after it marked its command done (`mark_rank_done`; gloo can abort in teardown,
    pytorch#65231) leaves a finished, reported run: exit 0, with a note."""
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if cfg is not None:
        from .device import resolve_device

        check_distributed(Ranks(0, nproc), cfg)
        resolve_device(cfg.device)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # rnnl2 says what failed

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        run_id=f"rnnl2-{os.getpid()}",
        max_restarts=0,
        monitor_interval=0.2,
    )
    with tempfile.TemporaryDirectory(prefix="rnnl2-ranks-") as done_folder:
        os.environ[RANKS_DONE_ENV] = done_folder  # the ranks inherit the launcher's environment
        try:
            elastic_launch(config, sys.executable)("-m", "rnnl2", *argv)
        except ChildFailedError as failed:
            if all(os.path.exists(os.path.join(done_folder, str(rank))) for rank in failed.failures):
                rank, _ = failed.get_first_failure()
                print(
                    f"note: rank {rank} died leaving the process group, after the run finished and was"
                    " reported (a known gloo teardown abort, pytorch#65231); the run is complete",
                    file=sys.stderr,
                )
                return 0
            return _failed_launch(failed)
        except SignalException:
            return 130
        finally:
            os.environ.pop(RANKS_DONE_ENV, None)
    return 0


def _failed_launch(failed: Any) -> int:
    """The exit code of a job in which a rank failed before its command was done."""
    rank, first = failed.get_first_failure()
    if first.exitcode < 0:  # a signal from outside (the launcher stops the others with SIGTERM after)
        name = signal.Signals(-first.exitcode).name
        raise RankLost(f"rank {rank} was killed by {name}; the launcher stopped the other ranks") from None
    codes = {rank: failure.exitcode for rank, failure in failed.failures.items()}
    code = codes.get(0, next(iter(codes.values())))
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option VALUE` or `option=VALUE` (the launcher's own option, not the ranks')."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            kept.append(item)
    return kept
