"""The block-diagonal model of `sweep --fused`: K members' RecurrentNets side by side in one
wide embedding, one wide nn.RNN/LSTM/GRU and one wide head, and where each member's weights sit.

    member k of K, hidden H, G gates (LSTM 4, GRU 3, RNN 1), D input features, C outputs
    weight_hh (G·KH × KH): gate g's rows g·KH + kH … g·KH + (k+1)H, columns kH … (k+1)H
    weight_ih, layer 0: the same rows, all D columns (the inputs are shared); embedded
        inputs (K·E wide embedding) and deeper layers: member k's columns only
    head (K·C × K·H·dirs): rows kC … (k+1)C, member k's columns of every direction

Off-block weights start at 0, and `rnnl2.fused` zeroes their gradients every step, so no member
reads another's state."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .models import RecurrentNet

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


class WideNet(nn.Module):
    """K members' RecurrentNets side by side: a wide embedding, one wide recurrent module, one wide head."""

    def __init__(self, members: list[nn.Module], cfg: RunConfig):
        super().__init__()
        first = members[0]
        assert isinstance(first, RecurrentNet)
        rnn = first.rnn
        assert isinstance(rnn, nn.RNNBase)  # one fused module: locked dropout (a module per layer) is refused
        self.K: int = len(members)
        self.H: int = cfg.model.hidden_size
        self.G: int = GATES[cfg.model.cell]
        self.dirs: int = first.directions
        self.C: int = first.head.out_features
        self.E: int | None = first.embedding.embedding_dim if first.embedding is not None else None
        self.vocab: int = first.embedding.num_embeddings if first.embedding is not None else 0
        self.per_step, self.pooling = first.per_step, first.pooling
        K = self.K
        self.embedding = nn.Embedding(self.vocab, K * self.E) if self.E else None
        extra: dict[str, Any] = {"nonlinearity": rnn.nonlinearity} if cfg.model.cell == "rnn" else {}
        self.rnn: nn.RNNBase = type(rnn)(
            input_size=K * self.E if self.E else rnn.input_size,
            hidden_size=K * self.H,
            num_layers=rnn.num_layers,
            bidirectional=rnn.bidirectional,
            batch_first=True,
            bias=rnn.bias,
            **extra,
        )
        self.head = nn.Linear(K * self.H * self.dirs, K * self.C)
        self.names = [name for name, _ in first.named_parameters()]
        wide = dict(self.named_parameters())
        self.blocks = {name: [self.block(name, k) for k in range(K)] for name in self.names}
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
        self.member_entries: dict[str, torch.Tensor] = {}
        """name → (K, entries of one member) flat positions of member k's entries, row k: 1/K of
        the wide parameter's size, where a map of every entry's owner would be all of it."""
        for name in self.names:
            flat = torch.arange(wide[name].numel()).view(wide[name].shape)
            self.member_entries[name] = torch.stack([flat[self.index(name, k)].reshape(-1) for k in range(K)])
        for k, member in enumerate(members):
            self.load_member(k, member)

    def gate_rows(self, k: int) -> torch.Tensor:
        H, KH = self.H, self.K * self.H
        return torch.cat([g * KH + k * H + torch.arange(H) for g in range(self.G)])

    def direction_columns(self, k: int) -> torch.Tensor:
        H, KH = self.H, self.K * self.H
        return torch.cat([d * KH + k * H + torch.arange(H) for d in range(self.dirs)])

    def block(self, name: str, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(rows, columns) of member k's `name` inside the wide parameter; columns None: all of them."""
        part = name.split(".", 1)[1]
        if name.startswith("embedding."):
            assert self.E is not None
            return torch.arange(self.vocab), k * self.E + torch.arange(self.E)
        if name.startswith("head."):
            rows = k * self.C + torch.arange(self.C)
            return (rows, self.direction_columns(k)) if part == "weight" else (rows, None)
        rows = self.gate_rows(k)
        if part.startswith("bias"):
            return rows, None
        if part.startswith("weight_hh"):
            return rows, k * self.H + torch.arange(self.H)
        layer = int(part.split("_l", 1)[1].split("_")[0])
        if layer > 0:
            return rows, self.direction_columns(k)
        return (rows, k * self.E + torch.arange(self.E)) if self.E is not None else (rows, None)

    def index(self, name: str, k: int) -> tuple:
        """Member k's entries of the wide parameter `name`, as an index."""
        rows, cols = self.blocks[name][k]
        return (rows,) if cols is None else (rows[:, None], cols[None, :])

    @torch.no_grad()
    def load_member(self, k: int, member: nn.Module) -> None:
        wide = dict(self.named_parameters())
        for name, p in member.named_parameters():
            wide[name][self.index(name, k)] = p.to(wide[name].device)

    @torch.no_grad()
    def member_tensors(self, k: int, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Member k's block of each wide tensor (parameters, or optimizer state shaped like them)."""
        return {name: t[self.index(name, k)].clone() for name, t in tensors.items()}

    def forward(self, inputs, lengths=None):
        """(batch, …, K·C) outputs: member k's are the last axis' k-th block of C."""
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        x = inputs if self.embedding is None else self.embedding(inputs)
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, hidden = self.rnn(packed)
            steps, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            steps, hidden = self.rnn(x)
        if self.per_step:
            return self.head(steps)
        if self.pooling == "last":
            final = hidden[0] if isinstance(hidden, tuple) else hidden
            summary = torch.cat(list(final[-self.dirs :]), dim=-1)
        elif lengths is None:
            summary = steps.mean(dim=1) if self.pooling == "mean" else steps.amax(dim=1)
        else:
            valid = torch.arange(steps.shape[1], device=steps.device)[None, :] < lengths.to(steps.device)[:, None]
            if self.pooling == "mean":
                summary = (steps * valid[..., None]).sum(1) / lengths.to(steps.device)[:, None]
            else:
                summary = steps.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
        return self.head(summary)
