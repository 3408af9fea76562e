"""`RecurrentNet`: optional embedding → fused nn.RNN/LSTM/GRU → dropout → linear head, with the
AWD-LSTM dropouts (locked, embedding, weight-drop) when the config turns them on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import ModelConfig
from .data import DataSpec
from .dropouts import embedding_dropout, locked_dropout, quiet_compaction_warning, run_recurrent, weight_drop_names
from .errors import ConfigError

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """One recurrent stack with a head chosen by the task.

    tagging / lm    outputs (batch, time, classes)         one prediction per step
    classification  outputs (batch, classes)                pooled over the valid steps
    regression      outputs (batch, horizon, targets)       pooled, then one linear map
    """

    def __init__(self, cfg: ModelConfig, spec: DataSpec):
        super().__init__()
        if cfg.embedding_dropout and not spec.tokens:
            raise ConfigError(
                "model.embedding_dropout: drops words, but this data's inputs are not tokens; set it to 0"
            )
        self.embedding = nn.Embedding(spec.input_size, cfg.embedding_dim) if spec.tokens else None
        # Channel-independent forecasting: every column is its own one-feature sequence.
        self.channels = spec.input_size if spec.pipeline.get("channel_independent") else None
        self.segment = spec.pipeline.get("segment", 1)  # channel values per recurrent step
        input_size = cfg.embedding_dim if spec.tokens else self.segment if self.channels else spec.input_size
        self.rnn = build_recurrent(cfg, input_size)
        self.directions = 2 if cfg.bidirectional else 1
        self.locked = cfg.locked_dropout
        self.dropout = nn.Dropout(cfg.dropout)  # before the head
        self.input_dropout, self.embedding_dropout = cfg.input_dropout, cfg.embedding_dropout
        rates = cfg.weight_drop_rates()  # {name inside its module: p}, one dict per recurrent module
        self.weight_drop = (
            [weight_drop_names(rnn, [p]) for rnn, p in zip(self.rnn, rates)]
            if self.locked
            else [weight_drop_names(self.rnn, rates)]
        )
        if any(self.weight_drop):
            quiet_compaction_warning()
        self.keep_activations = False  # set by `regularizers.build_terms` when AR or TAR needs them
        self.activations: tuple[torch.Tensor, torch.Tensor] | None = None
        self.per_step = spec.task in ("tagging", "lm")
        self.pooling = cfg.pooling
        self.output_shape = (spec.horizon, spec.output_size) if spec.task == "regression" else None
        self.head = nn.Linear(
            cfg.hidden_size * self.directions, (1 if self.channels else spec.output_size) * spec.horizon
        )
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
        if self.embedding is None:
            x = inputs
        else:
            x = embedding_dropout(self.embedding, inputs, self.embedding_dropout, self.training)
        if self.norm_index is not None:
            last = inputs[:, -1:, :]  # (batch, 1, features)
            x = inputs - last
        if self.channels:
            x = x.transpose(1, 2).reshape(
                -1, x.shape[1] // self.segment, self.segment
            )  # (batch·channels, steps, segment)
        if self.input_dropout:
            x = self.drop(x, self.input_dropout)
        if lengths is not None:  # padding never reaches the cell, so it cannot change a result
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            packed_out, hidden = self.recur(packed, hidden)
            steps, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
        else:
            steps, hidden = self.recur(x, hidden)  # (batch, time, hidden * directions)
        if self.per_step:
            dropped = self.drop(steps, self.dropout.p) if self.locked else self.dropout(steps)
            self.keep(dropped, steps)
            return self.head(dropped), hidden
        self.keep(steps, steps)  # pooled heads drop the summary, not the steps
        summary = self.pool(steps, hidden, lengths)  # (batch, hidden * directions)
        outputs = self.head(self.dropout(summary))
        if self.channels:
            outputs = outputs.view(-1, self.channels, self.output_shape[0]).transpose(1, 2)
        elif self.output_shape is not None:
            outputs = outputs.view(-1, *self.output_shape)
        if self.norm_index is not None:
            outputs = outputs + last[:, :, self.norm_index]  # (batch, horizon, targets)
        return outputs, hidden

    def drop(self, x, p: float):
        """Locked dropout when `locked_dropout` is on, else ordinary dropout."""
        return locked_dropout(x, p, self.training) if self.locked else F.dropout(x, p, self.training)

    def keep(self, dropped: torch.Tensor, steps: torch.Tensor) -> None:
        """Hold the last layer's outputs (as they go on to the head, and undropped) for AR and TAR."""
        if self.keep_activations and self.training:
            self.activations = (dropped, steps)  # (batch, time, hidden * directions) each

    def recur(self, x, hidden):
        """The recurrent stack: the one fused module, or (locked dropout) one module per layer with
        a locked mask between layers; `hidden` is (layers · directions, batch, hidden) either way."""
        if not self.locked:
            return run_recurrent(self.rnn, self.weight_drop[0], x, hidden, self.training)
        span = self.directions
        finals = []
        for k, (rnn, rates) in enumerate(zip(self.rnn, self.weight_drop)):
            if k > 0:
                x = locked_dropout(x, self.dropout.p, self.training)
            layer_hidden = None if hidden is None else slice_hidden(hidden, k * span, (k + 1) * span)
            x, layer_hidden = run_recurrent(rnn, rates, x, layer_hidden, self.training)
            finals.append(layer_hidden)
        if isinstance(finals[0], tuple):
            return x, tuple(torch.cat(parts) for parts in zip(*finals))
        return x, torch.cat(finals)

    def weight_drop_by_name(self) -> dict[str, float]:
        """{parameter name: its weight-drop p} for `config show --params`."""
        prefixes = [f"rnn.{k}." for k in range(len(self.rnn))] if self.locked else ["rnn."]
        return {prefix + name: p for prefix, rates in zip(prefixes, self.weight_drop) for name, p in rates.items()}

    def pool(self, steps, hidden, lengths):
        """Summarise the valid steps: last (final state of each direction), mean or max."""
        if self.pooling == "last":
            final = hidden[0] if isinstance(hidden, tuple) else hidden  # (layers*dirs, batch, hidden)
            return torch.cat(list(final[-self.directions :]), dim=-1)
        if lengths is None:
            return steps.mean(dim=1) if self.pooling == "mean" else steps.amax(dim=1)
        valid = torch.arange(steps.shape[1], device=steps.device)[None, :] < lengths.to(steps.device)[:, None]
        if self.pooling == "mean":
            return (steps * valid[..., None]).sum(1) / lengths.to(steps.device)[:, None]
        return steps.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)


def slice_hidden(hidden, start: int, stop: int):
    """Rows start…stop of a hidden state, a tensor or LSTM's (h, c)."""
    return tuple(h[start:stop] for h in hidden) if isinstance(hidden, tuple) else hidden[start:stop]


def build_recurrent(cfg: ModelConfig, input_size: int) -> nn.Module:
    """One fused module for the whole stack, or with locked dropout one single-layer module per layer
    (the locked mask between layers cannot run inside the fused module)."""
    extra = {"nonlinearity": cfg.nonlinearity} if cfg.cell == "rnn" else {}
    common = dict(hidden_size=cfg.hidden_size, bidirectional=cfg.bidirectional, batch_first=True, **extra)
    if not cfg.locked_dropout:
        between = cfg.dropout if cfg.num_layers > 1 else 0.0
        return CELLS[cfg.cell](input_size=input_size, num_layers=cfg.num_layers, dropout=between, **common)
    layer_input = cfg.hidden_size * (2 if cfg.bidirectional else 1)
    return nn.ModuleList(
        CELLS[cfg.cell](input_size=input_size if k == 0 else layer_input, num_layers=1, **common)
        for k in range(cfg.num_layers)
    )


def build_model(cfg: ModelConfig, spec: DataSpec) -> RecurrentNet:
    """The network for this data; parameter names are stable (`rnn.weight_ih_l0`, `head.weight`;
    `rnn.0.weight_ih_l0` per layer with locked dropout)."""
    return RecurrentNet(cfg, spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
