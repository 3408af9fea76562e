"""The built-in generated datasets (seed_tagging, sine, adding) and `Split.batches`."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app
from rnnl2.config import AddingData, SeedTaggingData, SineData
from rnnl2.data import BUILDERS, DataError, DataSpec, Split, build_splits

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread


def tensors(splits):
    return [t for name in ("train", "val", "test") for t in (splits.get(name).inputs, splits.get(name).targets)]


# ------------------------------------------------------------------ seed_tagging


def test_seed_tagging_shapes_and_spec():
    cfg = SeedTaggingData(input_dim=3, num_classes=4, seq_len=7, num_train=10, num_val=5, num_test=6)
    splits = build_splits(cfg)
    for name, count in (("train", 10), ("val", 5), ("test", 6)):
        split = splits.get(name)
        assert split.inputs.shape == (count, 7, 3) and split.inputs.dtype == torch.float32
        assert split.targets.shape == (count, 7) and split.targets.dtype == torch.int64
        assert split.lengths is None and not split.stateful
        assert 0 <= split.targets.min() and split.targets.max() < 4
    assert splits.spec == DataSpec(task="tagging", input_size=3, output_size=4)


def test_seed_tagging_labels_follow_the_recent_past():
    """Recompute every label with a plain loop over time: argmax of P·Σ_k 0.5^k x[t-k]."""
    cfg = SeedTaggingData(input_dim=3, num_classes=4, seq_len=6, memory=3, num_train=8, num_val=2, num_test=2, seed=5)
    splits = build_splits(cfg)
    generator = torch.Generator().manual_seed(5)
    projection = torch.randn(3, 4, generator=generator)  # drawn first, as the generator documents
    inputs = torch.cat([splits.train.inputs, splits.val.inputs, splits.test.inputs])
    targets = torch.cat([splits.train.targets, splits.val.targets, splits.test.targets])
    for n in range(inputs.shape[0]):
        for t in range(6):
            context = sum(0.5**k * inputs[n, t - k] for k in range(3) if t - k >= 0)
            assert targets[n, t] == int(torch.argmax(context @ projection))


def test_seed_tagging_needs_memory():
    """With memory > 1 the label is not a function of the current input alone."""
    cfg = SeedTaggingData(input_dim=2, num_classes=3, seq_len=10, memory=3, num_train=200, num_val=1, num_test=1)
    splits = build_splits(cfg)
    one_step = SeedTaggingData(**{**cfg.model_dump(), "memory": 1})
    current_only = build_splits(one_step).train.targets
    agreement = (current_only[:, 2:] == splits.train.targets[:, 2:]).float().mean()
    assert agreement < 0.9


@pytest.mark.parametrize(
    "cfg",
    [
        SeedTaggingData(input_dim=3, seq_len=5, num_train=12, num_val=4, num_test=4),
        SineData(lookback=6, horizon=2, num_train=12, num_val=4, num_test=4),
        AddingData(seq_len=8, num_train=12, num_val=4, num_test=4),
    ],
    ids=lambda c: c.kind,
)
def test_generators_are_deterministic_and_seeded(cfg):
    first, second = build_splits(cfg), build_splits(cfg)
    for a, b in zip(tensors(first), tensors(second)):
        assert torch.equal(a, b)
    other = build_splits(type(cfg)(**{**cfg.model_dump(), "seed": cfg.seed + 1}))
    assert not torch.equal(first.train.inputs, other.train.inputs)
    assert not torch.equal(first.train.inputs[:4], first.val.inputs)  # splits are different data


def test_every_builtin_kind_is_registered():
    assert {"seed_tagging", "sine", "adding"} <= set(BUILDERS)


# --------------------------------------------------------------------------- sine


def test_sine_shapes_and_spec():
    cfg = SineData(lookback=9, horizon=3, num_train=7, num_val=2, num_test=3)
    splits = build_splits(cfg)
    assert splits.train.inputs.shape == (7, 9, 1) and splits.train.targets.shape == (7, 3, 1)
    assert splits.test.inputs.shape == (3, 9, 1) and splits.test.targets.shape == (3, 3, 1)
    assert splits.spec == DataSpec(task="regression", input_size=1, output_size=1, horizon=3, target_columns=[0])


def test_sine_targets_continue_the_same_series():
    """Without noise and with one integer period P, value[t + P] == value[t] across the window cut."""
    cfg = SineData(lookback=8, horizon=4, periods=[4.0], noise=0.0, num_train=20, num_val=1, num_test=1)
    split = build_splits(cfg).train
    torch.testing.assert_close(split.targets[:, :, 0], split.inputs[:, 4:8, 0], atol=1e-5, rtol=0)
    assert split.inputs.abs().max() <= 1.5 + 1e-6  # amplitudes in [0.5, 1.5)


def test_sine_noise_has_the_configured_spread():
    clean = build_splits(SineData(lookback=20, horizon=5, noise=0.0, num_train=300, num_val=1, num_test=1))
    noisy = build_splits(SineData(lookback=20, horizon=5, noise=0.2, num_train=300, num_val=1, num_test=1))
    # Same phases and amplitudes (drawn before the noise), so the difference is the noise alone.
    residual = noisy.train.inputs - clean.train.inputs
    assert residual.std().item() == pytest.approx(0.2, rel=0.05)


# ------------------------------------------------------------------------- adding


def test_adding_shapes_markers_and_targets():
    cfg = AddingData(seq_len=10, num_train=50, num_val=10, num_test=10, seed=3)
    splits = build_splits(cfg)
    assert splits.spec == DataSpec(task="regression", input_size=2, output_size=1, horizon=1)
    for name, count in (("train", 50), ("val", 10), ("test", 10)):
        split = splits.get(name)
        assert split.inputs.shape == (count, 10, 2) and split.targets.shape == (count, 1, 1)
        values, markers = split.inputs[..., 0], split.inputs[..., 1]
        assert ((values >= 0) & (values < 1)).all()
        assert set(markers.unique().tolist()) == {0.0, 1.0}
        assert (markers[:, :5].sum(1) == 1).all() and (markers[:, 5:].sum(1) == 1).all()  # one per half
        torch.testing.assert_close(split.targets[:, 0, 0], (values * markers).sum(1))


def test_adding_constant_one_baseline_is_one_sixth():
    """Var(U₁ + U₂) = 2/12, so always answering 1.0 scores MSE ≈ 0.167: the bar to beat."""
    splits = build_splits(AddingData(seq_len=6, num_train=6000, num_val=1000, num_test=1000))
    targets = torch.cat([splits.train.targets, splits.val.targets, splits.test.targets])
    mse = (targets - 1.0).square().mean().item()
    assert mse == pytest.approx(1 / 6, abs=0.01)  # 4 standard errors at n = 8000


# ---------------------------------------------------------------------- batching


def test_split_get_rejects_unknown_names():
    splits = build_splits(AddingData(seq_len=4, num_train=3, num_val=1, num_test=1))
    with pytest.raises(DataError, match="train, val or test"):
        splits.get("dev")


def test_data_spec_round_trips_through_a_dict():
    spec = DataSpec(task="regression", input_size=2, output_size=3, horizon=4, pipeline={"mean": [0.5]})
    assert DataSpec.from_dict(spec.to_dict()) == spec


def indexed_split(count: int, with_lengths: bool) -> Split:
    """Example i has inputs full of i, target i and length i + 1: batches show where each went."""
    ids = torch.arange(count)
    inputs = ids.float().view(count, 1, 1).expand(count, 3, 2).clone()
    lengths = ids + 1 if with_lengths else None
    return Split(inputs, ids.clone(), lengths)


@settings(deadline=None, max_examples=60)
@given(
    count=st.integers(1, 60),
    batch_size=st.integers(1, 70),
    seed=st.integers(0, 2**31 - 1) | st.none(),
    with_lengths=st.booleans(),
)
def test_batches_lose_and_duplicate_no_example(count, batch_size, seed, with_lengths):
    split = indexed_split(count, with_lengths)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    batches = list(split.batches(batch_size, generator))
    assert len(batches) == split.num_batches(batch_size)
    assert all(len(b.targets) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1].targets) <= batch_size
    seen = torch.cat([b.targets for b in batches])
    if generator is None:
        assert torch.equal(seen, torch.arange(count))  # in order
    else:
        assert torch.equal(seen.sort().values, torch.arange(count))  # a permutation
    for b in batches:  # inputs and lengths travel with their example
        assert torch.equal(b.inputs[:, 0, 0].long(), b.targets)
        if with_lengths:
            assert torch.equal(b.lengths, b.targets + 1)
        else:
            assert b.lengths is None


def test_shuffling_depends_on_the_generator_only():
    split = indexed_split(40, with_lengths=False)

    def order(seed):
        return torch.cat([b.targets for b in split.batches(8, torch.Generator().manual_seed(seed))])

    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    assert not torch.equal(order(1), torch.arange(40))


# ------------------------------------------------------------------ size bounds


@pytest.mark.parametrize(
    "kind, fields, message",
    [
        (SeedTaggingData, {"num_train": 10**12}, "less than or equal to 10000000"),
        (SeedTaggingData, {"num_train": 10**6, "seq_len": 1000}, "seed_tagging would generate 1.6e+10 values"),
        (SineData, {"num_val": 10**7, "lookback": 1000}, "sine would generate"),
        (AddingData, {"num_test": 10**7, "seq_len": 1000}, "adding would generate"),
    ],
)
def test_a_generated_dataset_too_large_is_a_config_error(kind, fields, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        kind(**fields)


def test_num_train_too_large_exits_2_through_the_cli(tmp_path):
    config = write_config(tmp_path, TINY_TAGGING)
    result = CliRunner().invoke(
        app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--set", "data.num_train=1000000000000"]
    )
    assert result.exit_code == 2, result.output
    assert "data.num_train" in result.output and "10000000" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
