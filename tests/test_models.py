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


# ------------------------------------------------------ AWD-LSTM dropouts (issue 12)

LM_SPEC = DataSpec(task="lm", input_size=13, output_size=13, tokens=True)


def fused_copy_of(locked: nn.Module, spec: DataSpec, **model) -> nn.Module:
    """A fused-layout model holding the per-layer model's weights (`rnn.1.weight_hh_l0` → `rnn.weight_hh_l1`)."""
    fused = model_for(spec, **model)
    renamed = {}
    for name, value in locked.state_dict().items():
        parts = name.split(".")
        if parts[0] == "rnn":
            layer, param = int(parts[1]), parts[2]
            name = "rnn." + param.replace("_l0", f"_l{layer}")
        renamed[name] = value
    fused.load_state_dict(renamed)
    return fused


def test_weight_drop_zero_is_bitwise_the_plain_model():
    inputs = torch.randn(BATCH, TIME, FEATURES)
    plain = model_for(SPECS["tagging"], num_layers=2, dropout=0.3).train()
    zero = model_for(SPECS["tagging"], num_layers=2, dropout=0.3, weight_drop=0.0).train()
    torch.manual_seed(7)
    expected = plain(inputs)[0]
    state = torch.get_rng_state()
    torch.manual_seed(7)
    assert torch.equal(zero(inputs)[0], expected)
    assert torch.equal(torch.get_rng_state(), state)  # no extra random draws either
    assert zero.weight_drop == [{}] and isinstance(zero.rnn, nn.LSTM)


def test_weight_drop_changes_its_mask_every_batch_and_trains_the_raw_weights():
    model = model_for(SPECS["tagging"], num_layers=2, weight_drop=[0.5, 0.3]).train()
    assert model.weight_drop_by_name() == {"rnn.weight_hh_l0": 0.5, "rnn.weight_hh_l1": 0.3}
    inputs = torch.randn(BATCH, TIME, FEATURES)
    first, second = model(inputs)[0], model(inputs)[0]
    assert not torch.equal(first, second)
    (first.sum() + second.sum()).backward()
    assert model.rnn.weight_hh_l0.grad.abs().sum() > 0 and model.rnn.weight_hh_l1.grad.abs().sum() > 0
    assert isinstance(model.rnn, nn.LSTM)  # still the one fused module
    model.eval()
    assert torch.equal(model(inputs)[0], model(inputs)[0])


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_locked_layout_computes_the_same_network_as_the_fused_one(cell, nonlinearity, bidirectional):
    """With dropout off (eval), one module per layer is the fused stack, padding and hidden state included."""
    options = dict(cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional, num_layers=3, dropout=0.3)
    locked = model_for(SPECS["classification"], locked_dropout=True, weight_drop=0.4, input_dropout=0.2, **options)
    assert isinstance(locked.rnn, nn.ModuleList) and len(locked.rnn) == 3
    fused = fused_copy_of(locked, SPECS["classification"], **options).eval()
    inputs, lengths = torch.randn(BATCH, TIME, FEATURES), torch.tensor([6, 2, 4, 1])
    expected, expected_hidden = fused(inputs, lengths)
    got, hidden = locked(inputs, lengths)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    pairs = zip(hidden, expected_hidden) if cell == "lstm" else [(hidden, expected_hidden)]
    for a, b in pairs:
        assert a.shape == b.shape == (3 * (2 if bidirectional else 1), BATCH, 8)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_locked_dropout_shares_each_sequences_mask_over_time():
    """Between layers and on the outputs: with identity-like inputs, what a step loses is what every step loses."""
    spec = SPECS["tagging"]
    model = model_for(spec, num_layers=2, dropout=0.5, input_dropout=0.5, locked_dropout=True).train()
    captured = []
    model.rnn[1].register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    model.head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    model(torch.randn(BATCH, TIME, FEATURES))
    for dropped in captured:  # (batch, time, hidden): a unit zeroed at one step is zeroed at all
        zeros = dropped == 0
        assert torch.equal(zeros, zeros[:, :1].expand_as(zeros))
        assert zeros.any()
        assert not torch.equal(zeros[0], zeros[1])


def test_locked_layout_carries_a_stateful_hidden_state():
    model = model_for(LM_SPEC, cell="lstm", num_layers=2, embedding_dim=4, locked_dropout=True, dropout=0.2)
    tokens = torch.randint(0, 13, (BATCH, TIME))
    whole, _ = model(tokens)
    first, hidden = model(tokens[:, :3])
    second, _ = model(tokens[:, 3:], None, hidden)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-6, rtol=1e-5)
    assert hidden[0].shape == (2, BATCH, 8)


def test_every_dropout_is_off_in_eval_mode():
    """eval/predict: all options on give exactly the outputs of the same weights with none of them."""
    options = dict(cell="lstm", num_layers=2, embedding_dim=4, locked_dropout=True)
    noisy = model_for(LM_SPEC, dropout=0.5, input_dropout=0.5, weight_drop=0.5, embedding_dropout=0.5, **options).eval()
    quiet = model_for(LM_SPEC, seed=1, **options).eval()
    quiet.load_state_dict(noisy.state_dict())
    tokens = torch.randint(0, 13, (BATCH, TIME))
    state = torch.get_rng_state()
    assert torch.equal(noisy(tokens)[0], quiet(tokens)[0])
    assert torch.equal(torch.get_rng_state(), state)
    noisy.keep_activations = True
    noisy(tokens)
    assert noisy.activations is None  # AR/TAR see nothing outside training


def test_embedding_dropout_needs_token_inputs():
    from rnnl2.errors import ConfigError

    with pytest.raises(ConfigError, match="model.embedding_dropout"):
        model_for(SPECS["tagging"], embedding_dropout=0.1)
    model = model_for(LM_SPEC, embedding_dropout=0.5, embedding_dim=4).train()
    tokens = torch.randint(0, 13, (BATCH, TIME))
    assert not torch.equal(model(tokens)[0], model(tokens)[0])
