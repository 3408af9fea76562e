"""halving: the rung rule and its defaults, and the decisions of a bracket driven by a made-up
objective (pure logic: the training function is a stub that writes values, nothing trains)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from rnnl2.errors import ConfigError
from rnnl2.search.halving import (
    Trial,
    bracket_budget,
    bracket_sizes,
    decide,
    default_min_epochs,
    hyperband_sizes,
    keep_count,
    rank,
    run_bracket,
    rung_epochs,
)


def test_rungs_grow_by_eta_and_end_at_max_epochs():
    assert rung_epochs(1, 15, 3) == [1, 3, 9, 15]
    assert rung_epochs(1, 9, 3) == [1, 3, 9]
    assert rung_epochs(5, 40, 2) == [5, 10, 20, 40]
    assert rung_epochs(4, 4, 3) == [4]  # min = max: no halving
    with pytest.raises(ConfigError, match="above --max-epochs"):
        rung_epochs(5, 4, 3)


def test_the_first_rung_defaults_past_the_first_learning_rate_decay():
    multistep = SimpleNamespace(name="multistep", milestones=[4, 5, 6], step_size=10)
    assert default_min_epochs(multistep, 39, 3)[0] == 5  # epoch 5 is the first at the decayed rate
    assert default_min_epochs(multistep, 3, 3)[0] == 3  # capped at max-epochs
    step = SimpleNamespace(name="step", milestones=[], step_size=10)
    assert default_min_epochs(step, 40, 3)[0] == 11
    plain = SimpleNamespace(name="none", milestones=[], step_size=10)
    assert default_min_epochs(plain, 15, 3) == (1, "max-epochs 15 ÷ eta² (9)")
    assert default_min_epochs(plain, 40, 3)[0] == 4
    assert default_min_epochs(SimpleNamespace(name="cosine", milestones=[], step_size=1), 2, 3)[0] == 1


def test_budget_and_brackets():
    assert [keep_count(n, 3) for n in (1, 2, 3, 8, 9, 10)] == [1, 1, 1, 2, 3, 3]
    assert bracket_budget(9, [1, 3, 9, 15], 3) == 9 * 1 + 3 * 2 + 1 * 6 + 1 * 6
    assert bracket_budget(5, [7], 3) == 35  # no halving: every trial to the end
    assert bracket_sizes(20, "random", [1, 3, 9], 3, jobs=4) == [20]
    assert bracket_sizes(20, "tpe", [1, 3, 9], 3, jobs=4) == [9, 9, 2]
    assert bracket_sizes(5, "tpe", [9], 3, jobs=2) == [2, 2, 1]


def objective(trial: Trial, epoch: int) -> float:
    """A made-up validation loss: best at λ = 1e-3, lower with more epochs."""
    lam = trial.params["l2.lambda"]
    return abs(math.log10(lam) + 3) + 1.0 / epoch if lam > 0 else 5.0 + 1.0 / epoch


class StubTraining:
    """Trains nothing: each trial 'reaches' its rung with the objective's value there."""

    def __init__(self, rungs: list[int], fail: set[int] = frozenset(), finish_early: set[int] = frozenset()):
        self.rungs, self.fail, self.finish_early = rungs, fail, finish_early
        self.calls: list[list[tuple[int, int]]] = []
        self.interrupt_after: int | None = None

    def __call__(self, trials: list[Trial]) -> bool:
        self.calls.append([(t.number, self.rungs[t.rung]) for t in trials])
        for trial in trials:
            epoch = self.rungs[trial.rung]
            if trial.number in self.fail:
                trial.state, trial.values[epoch] = "failed", None
                continue
            trial.values[epoch] = objective(trial, epoch)
            last = epoch == self.rungs[-1] or trial.number in self.finish_early
            trial.state, trial.epochs = ("completed" if last else "paused"), epoch
        return self.interrupt_after is not None and len(self.calls) >= self.interrupt_after


def bracket_of(lambdas: list[float]) -> list[Trial]:
    return [Trial(i, f"t{i}", {"l2.lambda": lam}, 0) for i, lam in enumerate(lambdas)]


LAMBDAS = [0, 1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1]  # best: 1e-3, then 3e-4 and 3e-3


def test_halving_promotes_the_best_third_at_each_rung():
    rungs = [1, 3, 9]
    bracket, train, decisions = bracket_of(LAMBDAS), StubTraining(rungs), []
    assert not run_bracket(bracket, rungs, 3, "min", train, decisions.append)
    assert [sorted(n for n, _ in call) for call in train.calls] == [list(range(9)), [4, 5, 6], [5]]
    assert {t.number for t in bracket if t.state == "completed"} == {5}
    assert [t.state for t in bracket].count("stopped") == 8
    assert sorted(t.number for kind, t in decisions[0] if kind == "promoted") == [4, 5, 6]
    assert sum(t.epochs for t in bracket) == bracket_budget(9, rungs, 3)


def test_a_failed_trial_is_never_promoted_and_a_finished_one_is_not_resumed():
    rungs = [1, 3]
    bracket = bracket_of([1e-3, 3e-4, 1e-1, 1e-2])
    train = StubTraining(rungs, fail={0}, finish_early={1})
    run_bracket(bracket, rungs, 2, "min", train)
    assert [t.state for t in bracket] == ["failed", "completed", "stopped", "completed"]
    assert train.calls[1] == [(3, 3)]  # the best, 1, finished by itself; the next best goes on
    assert rank(bracket, 1, "min")[-1].number == 0  # no value ranks last
    ranked_max = rank(bracket, 1, "max")
    assert ranked_max[0].number == 2 and ranked_max[-1].number == 0


def test_a_stopped_bracket_continues_where_it_was_and_deciding_again_changes_nothing():
    rungs = [1, 3, 9]
    bracket, train = bracket_of(LAMBDAS), StubTraining(rungs)
    train.interrupt_after = 1
    assert run_bracket(bracket, rungs, 3, "min", train)  # interrupted after rung 0's training
    assert all(t.state == "paused" for t in bracket)
    train.interrupt_after = None
    assert not run_bracket(bracket, rungs, 3, "min", train)
    assert [len(call) for call in train.calls] == [9, 3, 1]  # nothing trained twice
    before = [(t.rung, t.state) for t in bracket]
    assert decide(bracket, 0, rungs, 3, "min") == [] and decide(bracket, 1, rungs, 3, "min") == []
    assert [(t.rung, t.state) for t in bracket] == before


def test_trial_records_round_trip_through_json():
    trial = Trial(
        3, "t3", {"l2.lambda": 0}, 1, rung=1, state="promoted", values={1: 0.5}, optuna={"number": 7, "id": 9}
    )
    again = Trial.from_json({**trial.to_json(), "run_dir": "/somewhere"})
    assert again == trial and again.values == {1: 0.5}


@pytest.mark.parametrize("total", [1, 3, 7, 12, 40, 1000])
def test_hyperband_brackets_cost_alike_and_add_up_to_the_trials(total):
    rungs = [1, 3, 9]
    sizes = hyperband_sizes(total, rungs, 3)
    assert sum(sizes) == total and min(sizes) >= 1 and len(sizes) == min(total, len(rungs))
    if total >= 40:  # weights 9, 5, 3 (Li et al.): each bracket's epochs within a factor 2 of the others
        costs = [bracket_budget(n, rungs[j:], 3) for j, n in enumerate(sizes)]
        assert max(costs) <= 2 * min(costs)


def test_a_hyperband_bracket_admitted_at_a_later_rung_skips_the_earlier_ones():
    """Bracket j's trials start at rung j: they train from scratch straight to rungs[j], and the
    last bracket trains every trial to the end, trusting no early rung."""
    rungs = [1, 3, 9]
    late = [Trial(i, f"t{i}", {"l2.lambda": lam}, 1, rung=1) for i, lam in enumerate([1e-5, 1e-3, 1e-1])]
    train = StubTraining(rungs)
    assert not run_bracket(late, rungs, 3, "min", train)
    assert [sorted(n for n, _ in call) for call in train.calls] == [[0, 1, 2], [1]]
    assert all(epoch == 3 for _, epoch in train.calls[0]) and sum(t.epochs for t in late) == bracket_budget(
        3, rungs[1:], 3
    )
    last = [Trial(i, f"t{i}", {"l2.lambda": lam}, 2, rung=2) for i, lam in enumerate([1e-5, 1e-3])]
    train = StubTraining(rungs)
    run_bracket(last, rungs, 3, "min", train)
    assert train.calls == [[(0, 9), (1, 9)]] and [t.state for t in last] == ["completed", "completed"]
