"""`predict`: run a trained model over a new file, read through the checkpoint's saved pipeline, and
write a CSV: forecasts per window, step and target in the file's units, class and probabilities, or
for a language model the next-token prediction at every position of the text."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import DataSpec, Split, load_new_data
from .device import resolve_device
from .errors import Rnnl2Error
from .evaluate import load_trained


@torch.inference_mode()
def run_model(model: torch.nn.Module, split: Split, batch_size: int) -> torch.Tensor:
    """The model's outputs for every example, in order, on the CPU."""
    model.eval()
    outputs = [model(batch.inputs, batch.lengths)[0].cpu() for batch in split.batches(batch_size)]
    return torch.cat(outputs)


def forecast_table(outputs: torch.Tensor, split: Split, spec: DataSpec) -> pd.DataFrame:
    """One row per (window, step): `window` counts from 0, `step` from 1; one column per target."""
    values = outputs.double()  # (windows, horizon, targets)
    if split.unscale is not None:
        offset, scale = split.unscale
        values = values * scale.double() + offset.double()
    windows, horizon, count = values.shape
    names = spec.pipeline.get("targets") or [f"target_{i}" for i in range(count)]
    table = pd.DataFrame(values.reshape(-1, count).numpy(), columns=names)
    table.insert(0, "step", np.tile(np.arange(1, horizon + 1), windows))
    table.insert(0, "window", np.repeat(np.arange(windows), horizon))
    return table


def class_table(logits: torch.Tensor, spec: DataSpec) -> pd.DataFrame:
    """One row per example: its predicted label, then `prob_<label>` for every class."""
    labels = spec.pipeline.get("labels") or [str(i) for i in range(logits.shape[-1])]
    probs = torch.softmax(logits.double(), dim=-1).numpy()
    table = pd.DataFrame(probs, columns=[f"prob_{label}" for label in labels])
    table.insert(0, "label", np.array(labels, dtype=object)[probs.argmax(axis=1)])
    table.insert(0, "index", np.arange(len(table)))
    return table


@torch.inference_mode()
def token_table(model: torch.nn.Module, split: Split, spec: DataSpec) -> pd.DataFrame:
    """One row per predicted token, the text read in order as one stream with the state carried:
    `position` (from 1), the `previous` token, the actual `token`, the model's most likely one
    (`predicted`), both probabilities, and the surprisal −log p(token) in nats, whose mean is the
    data loss of `eval --data` when read as one stream (`train.eval_batch_size: 1`)."""
    model.eval()
    hidden, actual, best = None, [], []
    for batch in split.batches(1):
        logits, hidden = model(batch.inputs, None, hidden)
        log_probs = torch.log_softmax(logits[0].double(), dim=-1)  # (time, vocab)
        actual.append(log_probs.gather(-1, batch.targets[0, :, None]).squeeze(-1).cpu())
        best.append(torch.stack(log_probs.max(-1)).cpu())  # (2, time): log p, index
    actual_lp, (best_lp, best_id) = torch.cat(actual).numpy(), torch.cat(best, dim=1).numpy()
    vocab, stream = np.array(spec.pipeline["vocab"], dtype=object), split.inputs.cpu().long().numpy()
    return pd.DataFrame(
        {
            "position": np.arange(1, len(stream)),
            "previous": vocab[stream[:-1]],
            "token": vocab[stream[1:]],
            "predicted": vocab[best_id.astype(np.int64)],
            "prob_token": np.exp(actual_lp),
            "prob_predicted": np.exp(best_lp),
            "surprisal": -actual_lp,
        }
    )


def predict_file(checkpoint: Path, data: Path, device: str = "auto", batch_size: int | None = None) -> pd.DataFrame:
    """Predictions of the checkpoint's model for every example of `data`."""
    target = resolve_device(device)
    _, _, cfg, spec, model = load_trained(checkpoint, target)
    if spec.task not in ("regression", "classification", "lm"):
        raise Rnnl2Error(
            f"predict: {spec.task} models are not supported (forecasting, classification and language models are)"
        )
    split = load_new_data(cfg.data, spec, data).to(target)
    if spec.task == "lm":
        return token_table(model, split, spec)
    outputs = run_model(model, split, batch_size or cfg.train.eval_batch_size)
    return forecast_table(outputs, split, spec) if spec.task == "regression" else class_table(outputs, spec)


def to_csv_text(table: pd.DataFrame) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.6g", lineterminator="\n")
    return buffer.getvalue()
