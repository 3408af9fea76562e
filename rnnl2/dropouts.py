"""The dropouts AWD-LSTM adds to a recurrent net: locked (one mask per sequence), embedding (whole
words) and weight-drop (DropConnect on `weight_hh`, with the fused kernel kept). Every mask comes
from torch's global RNG, whose state checkpoints save, so a resumed run draws the same masks."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence


def locked_mask(batch: int, features: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """Bernoulli(1 − p) / (1 − p), one row per sequence: (batch, features)."""
    return like.new_empty(batch, features).bernoulli_(1 - p) / (1 - p)


def locked_dropout(x: torch.Tensor | PackedSequence, p: float, training: bool) -> torch.Tensor | PackedSequence:
    """Dropout whose mask is drawn once per sequence and shared by all its steps.

    A padded batch (batch, time, features) multiplies by the mask broadcast over time. A packed
    batch stores step after step, the still-running sequences of each step in sorted order:

        batch_sizes 3 3 2 1   data rows  s0 s1 s2 | s0 s1 s2 | s0 s1 | s0
    so row r belongs to sorted sequence `rows[r]`, and its mask row is `mask[rows[r]]`.
    """
    if not training or p == 0:
        return x
    if isinstance(x, PackedSequence):
        sizes = x.batch_sizes  # (time,) on the CPU
        batch = int(sizes[0])
        index = torch.arange(batch)
        rows = index.expand(len(sizes), batch)[index[None, :] < sizes[:, None]]  # (rows,) in data order
        mask = locked_mask(batch, x.data.shape[-1], p, x.data)
        return x._replace(data=x.data * mask[rows.to(x.data.device)])
    return x * locked_mask(x.shape[0], x.shape[-1], p, x)[:, None, :]


def embedding_dropout(embedding: nn.Embedding, tokens: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Look tokens up in an embedding whose rows (whole words) are dropped with probability p."""
    if not training or p == 0:
        return embedding(tokens)
    weight = embedding.weight  # (vocabulary, dim)
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return F.embedding(tokens, weight * mask)


def weight_drop_names(rnn: nn.RNNBase, rates: list[float]) -> dict[str, float]:
    """{`weight_hh_l{k}` (and its `_reverse`): p of layer k} for the layers of `rnn` whose p > 0."""
    suffixes = ["", "_reverse"] if rnn.bidirectional else [""]
    return {f"weight_hh_l{k}{s}": p for k, p in enumerate(rates) for s in suffixes if p > 0}


def run_recurrent(rnn: nn.RNNBase, rates: dict[str, float], inputs, hidden, training: bool):
    """`rnn(inputs, hidden)`, with its `weight_hh` matrices DropConnect-ed while training.

    The raw matrices stay the module's parameters (what L2, L1, max-norm and the optimizer see);
    the forward runs the same fused nn.LSTM/GRU/RNN call on dropped copies, passed in by
    `torch.func.functional_call`, so gradients flow through the masks to the raw weights. (Not
    `nn.utils.parametrize`, which silently stops RNN weights from training, pytorch#65688.)"""
    if not training or not rates:
        return rnn(inputs, hidden)
    dropped = {name: drop_connect(getattr(rnn, name), p) for name, p in rates.items()}
    return functional_call(rnn, dropped, (inputs, hidden))


def drop_connect(weight: torch.Tensor, p: float) -> torch.Tensor:
    """Each weight zeroed with probability p, the rest scaled by 1/(1 − p): F.dropout's result, from
    a uniform draw instead of a Bernoulli one, which on the CPU is about half the cost."""
    mask = (torch.rand_like(weight) >= p).to(weight.dtype).mul_(1 / (1 - p))
    return weight * mask


def quiet_compaction_warning() -> None:
    """cuDNN copies weights that are not in its one flat buffer, as the dropped copies are not,
    and warns every step; the copy is the expected cost of weight-drop, so the warning goes."""
    warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
