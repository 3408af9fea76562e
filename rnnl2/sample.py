"""Text generation from a trained `text_lm` checkpoint: read the prompt through the training
vocabulary, then draw one token at a time from softmax(logits / temperature), carrying the state."""

from __future__ import annotations

from pathlib import Path

import torch

from .data.text import EOS, UNK, encode_lm_text
from .device import resolve_device
from .errors import ConfigError
from .evaluate import load_trained
from .checkpoints import CheckpointError


def load_language_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The model of a text_lm checkpoint (eval mode) and its data pipeline (vocabulary, level)."""
    checkpoint_path, _, cfg, spec, model = load_trained(Path(path), device)
    if spec.task != "lm" or "vocab" not in spec.pipeline:
        raise CheckpointError(f"{checkpoint_path}: sample needs a text_lm checkpoint; this one is {cfg.data.kind}")
    return model.eval(), spec.pipeline


def encode_prompt(prompt: str, pipeline: dict) -> list[int]:
    """Prompt → ids through the training tokenizer (unseen tokens → `<unk>`, a newline → `<eos>` at
    word level); an empty prompt starts at a sentence boundary, as after a line end."""
    ids = encode_lm_text(prompt, pipeline)
    if ids:
        return ids
    boundary = "\n" if pipeline["level"] == "char" else EOS
    if boundary not in pipeline["vocab"]:
        raise ConfigError(
            f"--prompt: this model's vocabulary has no {boundary!r} to start from; give a --prompt to start the text"
        )
    return [pipeline["vocab"].index(boundary)]


def decode(ids: list[int], pipeline: dict) -> str:
    """Ids → text: characters joined, or words joined by spaces with `<eos>` as a line end."""
    tokens = [pipeline["vocab"][i] for i in ids]
    if pipeline["level"] == "char":
        return "".join(tokens)
    return " ".join(tokens).replace(f" {EOS} ", "\n").replace(EOS, "\n")


@torch.inference_mode()
def sample_text(
    path: Path, prompt: str = "", length: int = 200, temperature: float = 1.0, seed: int = 0, device: str = "cpu"
) -> str:
    """The prompt followed by `length` generated tokens (never `<unk>`); temperature 0 takes the
    most likely one."""
    target = resolve_device(device)
    model, pipeline = load_language_model(path, target)
    generator = torch.Generator(device=target).manual_seed(seed)
    ids = encode_prompt(prompt, pipeline)
    logits, hidden = model(torch.tensor([ids], device=target), None, None)  # (1, time, vocab)
    unk = pipeline["vocab"].index(UNK)
    generated: list[int] = []
    for _ in range(length):
        last = logits[0, -1].clone()
        last[unk] = float("-inf")  # never write <unk>: it stands for many tokens, none of them known
        if temperature == 0:
            token = int(last.argmax())
        else:
            probs = torch.softmax(last.double() / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        generated.append(token)
        logits, hidden = model(torch.tensor([[token]], device=target), None, hidden)
    text = decode(generated, pipeline)
    if not prompt:
        return text
    separator = "" if pipeline["level"] == "char" or text[:1] in ("", "\n") else " "
    return prompt + separator + text
