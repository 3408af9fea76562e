"""The AWD-LSTM dropouts on their own: a locked mask is one per sequence and constant over time
(padded and packed), embedding dropout drops whole words, weight-drop keeps the fused kernel,
changes its mask every batch and trains the raw weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnl2.dropouts import drop_connect, embedding_dropout, locked_dropout, run_recurrent, weight_drop_names

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one torch thread

P = 0.5


def test_locked_mask_is_constant_over_time_and_differs_across_sequences():
    torch.manual_seed(0)
    x = torch.ones(6, 7, 20)  # (batch, time, features)
    dropped = locked_dropout(x, P, training=True)
    assert torch.equal(dropped, dropped[:, :1, :].expand_as(dropped))  # every step as the first
    assert set(dropped.unique().tolist()) == {0.0, 1 / (1 - P)}
    masks = dropped[:, 0, :]
    assert all(not torch.equal(masks[i], masks[j]) for i in range(6) for j in range(i))
    assert not torch.equal(dropped, locked_dropout(x, P, training=True))  # a new mask each call


def test_locked_mask_on_a_packed_batch_is_constant_over_each_sequences_valid_steps():
    torch.manual_seed(1)
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.rand(4, 7, 10) + 1.0  # no zeros of its own
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    dropped, _ = pad_packed_sequence(locked_dropout(packed, P, training=True), batch_first=True, total_length=7)
    ratio = dropped / x  # the mask, step by step
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(ratio[i, :n], ratio[i, :1].expand(n, -1)), i
        assert torch.equal(dropped[i, n:], torch.zeros_like(dropped[i, n:]))  # padding stays padding
    assert len({tuple(ratio[i, 0].tolist()) for i in range(4)}) == 4


def test_locked_dropout_is_the_identity_in_eval_mode_and_at_zero():
    x = torch.randn(3, 4, 5)
    assert locked_dropout(x, P, training=False) is x
    assert locked_dropout(x, 0.0, training=True) is x


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(2)
    embedding = nn.Embedding(30, 6)
    tokens = torch.randint(0, 30, (8, 12))
    dropped = embedding_dropout(embedding, tokens, P, training=True)
    plain = embedding(tokens)
    for token in tokens.unique().tolist():
        rows = dropped[tokens == token] / plain[tokens == token]  # (occurrences, dim)
        assert torch.allclose(rows, torch.zeros_like(rows)) or torch.allclose(rows, torch.full_like(rows, 2.0))
    assert (dropped == 0).all(-1).any() and (dropped != 0).any()
    assert torch.equal(embedding_dropout(embedding, tokens, P, training=False), plain)


def test_embedding_dropout_gradient_reaches_only_the_kept_rows():
    torch.manual_seed(3)
    embedding = nn.Embedding(10, 4)
    tokens = torch.arange(10)[None, :]
    dropped = embedding_dropout(embedding, tokens, P, training=True)
    dropped.sum().backward()
    kept = (dropped != 0).any(-1)[0]  # (vocabulary,)
    assert torch.equal(embedding.weight.grad[kept], torch.full((int(kept.sum()), 4), 2.0))
    assert torch.equal(embedding.weight.grad[~kept], torch.zeros(int((~kept).sum()), 4))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_weight_drop_names_cover_each_layers_recurrent_matrices(bidirectional):
    rnn = nn.LSTM(3, 4, num_layers=3, bidirectional=bidirectional)
    names = weight_drop_names(rnn, [0.5, 0.0, 0.2])
    expected = {"weight_hh_l0": 0.5, "weight_hh_l2": 0.2}
    if bidirectional:
        expected |= {"weight_hh_l0_reverse": 0.5, "weight_hh_l2_reverse": 0.2}
    assert names == expected


@pytest.mark.parametrize("cell", [nn.RNN, nn.LSTM, nn.GRU])
def test_weight_drop_is_dropconnect_on_the_raw_weights_through_the_fused_call(cell):
    torch.manual_seed(4)
    rnn = cell(3, 5, num_layers=2, batch_first=True)
    inputs = torch.randn(2, 6, 3)
    rates = weight_drop_names(rnn, [P, P])
    state = torch.get_rng_state()
    outputs, _ = run_recurrent(rnn, rates, inputs, None, training=True)
    # The same computation by hand: the same masks (same RNG state), the dropped weights in a copy.
    torch.set_rng_state(state)
    raw = {name: getattr(rnn, name) for name in rates}
    dropped = {name: weight * (torch.rand_like(weight) >= P) / (1 - P) for name, weight in raw.items()}
    copy = cell(3, 5, num_layers=2, batch_first=True)
    copy.load_state_dict({**rnn.state_dict(), **{n: w.detach() for n, w in dropped.items()}})
    assert torch.allclose(outputs, copy(inputs)[0], atol=1e-6)
    # Gradients reach the raw weights, through the mask: zero exactly where a weight was dropped.
    outputs.sum().backward()
    for name, weight in raw.items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name
        assert torch.equal(weight.grad[dropped[name] == 0], torch.zeros_like(weight.grad[dropped[name] == 0]))


def test_weight_drop_draws_a_new_mask_every_call_and_none_in_eval():
    torch.manual_seed(5)
    rnn = nn.LSTM(3, 5, batch_first=True)
    inputs = torch.randn(2, 6, 3)
    rates = weight_drop_names(rnn, [P])
    first, second = (run_recurrent(rnn, rates, inputs, None, training=True)[0] for _ in range(2))
    assert not torch.equal(first, second)
    state = torch.get_rng_state()
    evaluated = run_recurrent(rnn, rates, inputs, None, training=False)[0]
    assert torch.equal(evaluated, rnn(inputs)[0])
    assert torch.equal(torch.get_rng_state(), state)  # eval draws nothing


def test_weight_drop_keeps_the_fused_kernel():
    """The dropped forward is still one `aten::lstm` call, not a Python loop over steps or cells."""
    rnn = nn.LSTM(3, 5, num_layers=2, batch_first=True)
    inputs = torch.randn(2, 6, 3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run_recurrent(rnn, weight_drop_names(rnn, [P, P]), inputs, None, training=True)
    names = [event.name for event in prof.events()]
    assert names.count("aten::lstm") == 1
    assert "aten::lstm_cell" not in names
    assert isinstance(rnn.weight_hh_l0, nn.Parameter) and rnn.weight_hh_l0.requires_grad  # still trainable


def test_drop_connect_keeps_each_weight_with_probability_one_minus_p_and_rescales_it():
    torch.manual_seed(6)
    weight = torch.ones(400, 100)
    dropped = drop_connect(weight, 0.3)
    assert torch.equal(dropped.unique(), torch.tensor([0.0, 1 / 0.7]))
    assert (dropped == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.02)  # unbiased, as dropout
