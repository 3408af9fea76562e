"""`RecurrentNet`: optional embedding → fused nn.RNN/LSTM/GRU → dropout → linear head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import ModelConfig
from .data import DataSpec

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """One recurrent stack with a head chosen by the task.

    tagging / lm    outputs (batch, time, classes)         one prediction per step
    classification  outputs (batch, classes)                pooled over the valid steps
    regression      outputs (batch, horizon, targets)       pooled, then one linear map
    """

    def __init__(self, cfg: ModelConfig, spec: DataSpec):
        super().__init__()
        self.embedding = nn.Embedding(spec.input_size, cfg.embedding_dim) if spec.tokens else None
        # Channel-independent forecasting: every column is its own one-feature sequence.
        self.channels = spec.input_size if spec.pipeline.get("channel_independent") else None
        self.segment = spec.pipeline.get("segment", 1)  # channel values per recurrent step
        extra = {"nonlinearity": cfg.nonlinearity} if cfg.cell == "rnn" else {}
        self.rnn = CELLS[cfg.cell](
            input_size=cfg.embedding_dim if spec.tokens else self.segment if self.channels else spec.input_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,  # between layers
            bidirectional=cfg.bidirectional,
            batch_first=True,
            **extra,
        )
        self.dropout = nn.Dropout(cfg.dropout)  # before the head
        self.per_step = spec.task in ("tagging", "lm")
        self.pooling = cfg.pooling
        self.output_shape = (spec.horizon, spec.output_size) if spec.task == "regression" else None
        directions = 2 if cfg.bidirectional else 1
        self.head = nn.Linear(cfg.hidden_size * directions, (1 if self.channels else spec.output_size) * spec.horizon)
        # Per-window normalization (forecasting): inputs minus the window's last row, forecast plus
        # the targets' last values; `window_norm` lists the targets' input columns.
        norm = spec.pipeline.get("window_norm") if spec.task == "regression" else None
        self.register_buffer("norm_index", torch.tensor(norm) if norm else None, persistent=False)
        if cfg.init_scale is not None:
            with torch.no_grad():
                for param in self.parameters():
                    param.uniform_(-cfg.init_scale, cfg.init_scale)

    def forward(self, inputs, lengths=None, hidden=None):
        """Returns (outputs, hidden); `hidden` is only carried by stateful (lm) training."""
        x = self.embedding(inputs) if self.embedding is not None else inputs
        if self.norm_index is not None:
            last = inputs[:, -1:, :]  # (batch, 1, features)
            x = inputs - last
        if self.channels:
            x = x.transpose(1, 2).reshape(
                -1, x.shape[1] // self.segment, self.segment
            )  # (batch·channels, steps, segment)
        if lengths is not None:  # padding never reaches the cell, so it cannot change a result
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            packed_out, hidden = self.rnn(packed, hidden)
            steps, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
        else:
            steps, hidden = self.rnn(x, hidden)  # (batch, time, hidden * directions)
        if self.per_step:
            return self.head(self.dropout(steps)), hidden
        summary = self.pool(steps, hidden, lengths)  # (batch, hidden * directions)
        outputs = self.head(self.dropout(summary))
        if self.channels:
            outputs = outputs.view(-1, self.channels, self.output_shape[0]).transpose(1, 2)
        elif self.output_shape is not None:
            outputs = outputs.view(-1, *self.output_shape)
        if self.norm_index is not None:
            outputs = outputs + last[:, :, self.norm_index]  # (batch, horizon, targets)
        return outputs, hidden

    def pool(self, steps, hidden, lengths):
        """Summarise the valid steps: last (final state of each direction), mean or max."""
        if self.pooling == "last":
            final = hidden[0] if isinstance(hidden, tuple) else hidden  # (layers*dirs, batch, hidden)
            directions = 2 if self.rnn.bidirectional else 1
            return torch.cat(list(final[-directions:]), dim=-1)
        if lengths is None:
            return steps.mean(dim=1) if self.pooling == "mean" else steps.amax(dim=1)
        valid = torch.arange(steps.shape[1], device=steps.device)[None, :] < lengths.to(steps.device)[:, None]
        if self.pooling == "mean":
            return (steps * valid[..., None]).sum(1) / lengths.to(steps.device)[:, None]
        return steps.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)


def build_model(cfg: ModelConfig, spec: DataSpec) -> RecurrentNet:
    """The network for this data; parameter names are stable (`rnn.weight_ih_l0`, `head.weight`)."""
    return RecurrentNet(cfg, spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
