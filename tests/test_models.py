"""`RecurrentNet`: shapes for every cell and head, packed padding, and that it can learn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnl2.config import ModelConfig
from rnnl2.data import DataSpec
from rnnl2.evaluate import build_loss
from rnnl2.models import build_model, count_parameters

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
CELL_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]
BATCH, TIME, FEATURES = 4, 6, 3

SPECS = {
    "tagging": DataSpec(task="tagging", input_size=FEATURES, output_size=5),
    "classification": DataSpec(task="classification", input_size=FEATURES, output_size=4),
    "regression": DataSpec(task="regression", input_size=FEATURES, output_size=2, horizon=3),
}
EXPECTED = {"tagging": (BATCH, TIME, 5), "classification": (BATCH, 4), "regression": (BATCH, 3, 2)}


def model_for(spec: DataSpec, seed: int = 0, **model) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{"hidden_size": 8, **model}), spec).eval()


@pytest.mark.parametrize("task", sorted(SPECS))
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("layout", ["plain", "bidirectional", "two_layers_dropout"])
def test_output_shapes(cell, nonlinearity, task, layout):
    extra = {
        "plain": {},
        "bidirectional": {"bidirectional": True},
        "two_layers_dropout": {"num_layers": 2, "dropout": 0.3},
    }[layout]
    model = model_for(SPECS[task], cell=cell, nonlinearity=nonlinearity, **extra).train()
    inputs = torch.randn(BATCH, TIME, FEATURES)
    lengths = torch.tensor([6, 3, 1, 5]) if task == "classification" else None
    outputs, hidden = model(inputs, lengths)
    assert outputs.shape == EXPECTED[task]
    assert torch.isfinite(outputs).all()
    final = hidden[0] if cell == "lstm" else hidden
    layers, directions = extra.get("num_layers", 1), 2 if extra.get("bidirectional") else 1
    assert final.shape == (layers * directions, BATCH, 8)
    assert isinstance(model.rnn, {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell])  # fused cell
    assert model.head.in_features == 8 * directions


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_plain_rnn_uses_the_configured_nonlinearity(nonlinearity):
    assert model_for(SPECS["tagging"], cell="rnn", nonlinearity=nonlinearity).rnn.nonlinearity == nonlinearity


def test_dropout_sits_between_layers_and_before_the_head():
    model = model_for(SPECS["tagging"], num_layers=2, dropout=0.4)
    assert model.rnn.dropout == 0.4 and model.dropout.p == 0.4
    single = model_for(SPECS["tagging"], num_layers=1, dropout=0.4)
    assert single.rnn.dropout == 0.0 and single.dropout.p == 0.4  # no warning-raising inter-layer dropout
    inputs = torch.randn(BATCH, TIME, FEATURES)
    model.eval()
    assert torch.equal(model(inputs)[0], model(inputs)[0])
    model.train()
    assert not torch.equal(model(inputs)[0], model(inputs)[0])


def test_token_inputs_get_an_embedding():
    spec = DataSpec(task="lm", input_size=11, output_size=11, tokens=True)
    model = model_for(spec, embedding_dim=5, cell="gru")
    tokens = torch.randint(0, 11, (BATCH, TIME))
    outputs, _ = model(tokens)
    assert outputs.shape == (BATCH, TIME, 11)
    assert model.embedding.weight.shape == (11, 5) and model.rnn.input_size == 5
    assert model_for(SPECS["tagging"]).embedding is None


def test_init_scale_draws_every_parameter_uniformly():
    spec = DataSpec(task="lm", input_size=50, output_size=50, tokens=True)
    model = model_for(spec, embedding_dim=16, hidden_size=16, num_layers=2, init_scale=0.1)
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert values.abs().max() <= 0.1 and values.abs().max() > 0.099  # every parameter inside, the range used
    assert values.std().item() == pytest.approx(0.1 / 3**0.5, rel=0.02)  # U(-s, s) has std s/√3
    default = model_for(spec, embedding_dim=16, hidden_size=16, num_layers=2)
    assert default.embedding.weight.abs().max() > 1  # PyTorch's N(0, 1) embeddings, untouched by default


def test_parameter_names_are_stable():
    names = [n for n, _ in model_for(SPECS["tagging"], num_layers=2, bidirectional=True).named_parameters()]
    assert names[:4] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"]
    assert "rnn.weight_ih_l1_reverse" in names
    assert names[-2:] == ["head.weight", "head.bias"]
    assert count_parameters(model_for(SPECS["tagging"])) == sum(
        p.numel() for p in model_for(SPECS["tagging"]).parameters()
    )


# ---------------------------------------------------------------- packed padding


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_padding_never_changes_a_sequence_output(cell, nonlinearity, pooling, bidirectional):
    """An example alone gives the same output as inside a longer, padded batch."""
    spec = SPECS["classification"]
    model = model_for(
        spec, cell=cell, nonlinearity=nonlinearity, pooling=pooling, bidirectional=bidirectional, num_layers=2
    )
    torch.manual_seed(1)
    short = torch.randn(1, 3, FEATURES)
    batch = torch.randn(3, 7, FEATURES) * 5  # large padding values would show if they leaked in
    batch[1, :3] = short[0]
    lengths = torch.tensor([7, 3, 5])
    alone_packed, _ = model(short, torch.tensor([3]))
    alone_plain, _ = model(short)
    padded, _ = model(batch, lengths)
    torch.testing.assert_close(padded[1:2], alone_packed, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alone_plain, alone_packed, atol=1e-6, rtol=1e-5)
    # the padding is really there: without lengths the same batch gives another answer
    unpacked, _ = model(batch)
    assert not torch.allclose(unpacked[1], alone_packed[0], atol=1e-4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_never_changes_per_step_outputs(cell):
    model = model_for(SPECS["tagging"], cell=cell, bidirectional=True)
    torch.manual_seed(2)
    short = torch.randn(1, 4, FEATURES)
    batch = torch.randn(2, 6, FEATURES) * 3
    batch[0, :4] = short[0]
    alone, _ = model(short)
    padded, _ = model(batch, torch.tensor([4, 6]))
    torch.testing.assert_close(padded[0, :4], alone[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_without_lengths_uses_every_step(pooling):
    model = model_for(SPECS["classification"], pooling=pooling)
    inputs = torch.randn(2, 5, FEATURES)
    steps, _ = model.rnn(inputs)
    expected = steps.mean(1) if pooling == "mean" else steps.amax(1)
    torch.testing.assert_close(model(inputs)[0], model.head(expected))


# ----------------------------------------------------------------------- learning


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_tiny_model_overfits_one_batch(cell):
    spec = DataSpec(task="tagging", input_size=FEATURES, output_size=3)
    model = model_for(spec, cell=cell).train()
    torch.manual_seed(3)
    inputs = torch.randn(8, 5, FEATURES)
    targets = torch.randint(0, 3, (8, 5))
    loss_fn = build_loss("tagging")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(150):
        loss = loss_fn(model(inputs)[0], targets)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (model(inputs)[0].argmax(-1) == targets).float().mean().item()
    assert loss.item() < 0.2 * first
    assert accuracy >= 0.95
