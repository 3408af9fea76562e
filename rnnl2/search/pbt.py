"""Population-based training for `tune --scheduler pbt` (Jaderberg et al. 2017), as Ray Tune's
scheduler does it: the population trains in intervals of `--perturb-epochs`; at each interval's
end the bottom quarter copies a top-quarter member's folder (weights, optimizer state, RNG
states, metrics so far: its `checkpoints/last.pt`, exactly) and goes on with a perturbed λ
(×0.8 or ×1.25, or one drawn afresh from the space, a quarter of the time). So λ becomes a
schedule, and each member's lineage says whose weights it carries from which epoch.

Deciding is pure (`decide`: seeded by the tune's seed and the epoch, so a driver killed before
it saved the decision makes the same one again); copying (`copy_member`) builds the new folder
beside the old one and swaps it in with two renames, so a killed driver redoes it whole."""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path
from typing import Any

from ..errors import Rnnl2Error
from ..runs import NOT_COPIED, RUN_FILE, check_unlocked, read_json, read_summary, write_json
from .halving import Trial, rank
from .space import Space, draw, rounded

QUANTILE = 0.25
"""The share of the population that copies a better member at each interval (Ray's quantile_fraction)."""
FACTORS = (0.8, 1.25)
"""A copied λ is multiplied by one of these (Ray's perturbation factors)."""
RESAMPLE = 0.25
"""The chance that a copied value is drawn afresh from its space instead (Ray's resample_probability)."""


def interval_epochs(perturb_epochs: int, max_epochs: int) -> list[int]:
    """The epochs where the population is compared: every `perturb_epochs`, then the end."""
    return [*range(perturb_epochs, max_epochs, perturb_epochs), max_epochs]


def quantile_count(members: int) -> int:
    """How many members copy another at an interval: a quarter, at least one of two or more."""
    return 0 if members < 2 else min(members // 2, max(1, math.floor(members * QUANTILE)))


def perturb(params: dict[str, Any], spaces: list[Space], rng: random.Random) -> dict[str, Any]:
    """A donor's values, perturbed: a number ×0.8 or ×1.25 (kept in its bounds, an int rounded),
    a choice moved to a random one; each drawn afresh from its space with probability RESAMPLE."""
    new = dict(params)
    for space in spaces:
        value = params.get(space.key)
        if rng.random() < RESAMPLE or not isinstance(value, (int, float)) or isinstance(value, bool):
            new[space.key] = draw(space, rng)
            continue
        scaled = value * rng.choice(FACTORS)
        if space.kind == "int":
            low, high = int(space.low or 0), int(space.high or 0)  # an int space always has both
            new[space.key] = min(max(round(scaled), low), high)
        elif space.kind == "choice" or value == 0:
            new[space.key] = value  # 0 stays 0 under a factor; a resample can leave it
        else:
            new[space.key] = rounded(scaled, space)
    return new


def decide(members: list[Trial], k: int, rungs: list[int], mode: str, spaces: list[Space], seed: int):
    """Decide interval k: every member paused there goes on to interval k+1; the worst
    `quantile_count` of them first take a best one's folder and perturbed values (`pending`,
    carried out by `copy_member`). A member that ended by its own rules (early stopping) or
    failed takes no part. Deciding again changes nothing."""
    epoch = rungs[k]
    paused = [t for t in members if t.state == "paused" and t.rung == k]
    ranked = rank([t for t in paused if t.values.get(epoch) is not None], epoch, mode)
    cut = quantile_count(len(ranked))
    top, bottom = ranked[:cut], {t.number for t in ranked[len(ranked) - cut :]} if cut else set()
    rng = random.Random(f"rnnl2-pbt:{seed}:{epoch}")  # the same decision when a killed driver redoes it
    events: list[tuple[str, Trial]] = []
    for trial in paused:
        trial.rung, trial.state = k + 1, "promoted"
        if trial.number in bottom:
            donor = top[rng.randrange(len(top))]
            params = perturb(donor.params, spaces, rng)
            trial.pending = {"from": donor.name, "epoch": epoch, "params": params, "donor_params": dict(donor.params)}
            trial.params = params
            trial.lineage = [
                *donor.lineage,
                {"epoch": epoch, "from": donor.name, "params": params},
            ]  # its weights' past
            events.append(("exploited", trial))
        else:
            events.append(("promoted", trial))
    return events


def copy_member(donor_dir: Path, recipient_dir: Path, epoch: int, lineage: list[dict[str, Any]]) -> None:
    """Make `recipient_dir` an exact copy of `donor_dir` paused at `epoch` (its checkpoints,
    metrics and identity, so `train --resume` takes its last.pt), keeping the recipient's own
    tracking files, and record `lineage` in run.json. Built in a hidden sibling and swapped in:
    a driver killed on the way leaves the old folder or the new one, and redoing it is safe."""
    summary = read_summary(donor_dir) or {}
    if summary.get("status") != "paused" or summary.get("epochs_run") != epoch:
        raise Rnnl2Error(
            f"{donor_dir}: cannot copy it for population-based training: it should be paused at epoch "
            f"{epoch}, and its summary.json says {summary.get('status')!r} after {summary.get('epochs_run')} epochs"
        )
    check_unlocked(donor_dir)
    built = recipient_dir.with_name(f".{recipient_dir.name}.exploit")
    old = recipient_dir.with_name(f".{recipient_dir.name}.replaced")
    shutil.rmtree(built, ignore_errors=True)
    shutil.copytree(donor_dir, built, ignore=lambda folder, names: [n for n in names if n in NOT_COPIED])
    if recipient_dir.is_dir():
        check_unlocked(recipient_dir)
        for name in NOT_COPIED[1:]:
            if (recipient_dir / name).exists():
                shutil.move(recipient_dir / name, built / name)
    identity = read_json(built / RUN_FILE)
    write_json(built / RUN_FILE, {**identity, "lineage": lineage})
    write_json(built / "summary.json", {**summary, "run_dir": str(recipient_dir)})
    shutil.rmtree(old, ignore_errors=True)
    if recipient_dir.exists():
        recipient_dir.rename(old)
    built.rename(recipient_dir)
    shutil.rmtree(old, ignore_errors=True)


def schedule_text(trial: Trial, key: str) -> str:
    """`0:1e-04 → 4:1.25e-04 (trial-0002)`: a member's values of `key` from each epoch on."""
    from .grid import format_value

    parts = []
    for entry in trial.lineage:
        source = f" ({entry['from']})" if entry.get("from") else ""
        parts.append(f"{entry['epoch']}:{format_value(entry['params'].get(key))}{source}")
    return " → ".join(parts)
