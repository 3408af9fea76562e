"""`sample`'s prompt: read with the training tokenizer, and where an empty prompt starts."""

from __future__ import annotations

import pytest

from rnnl2.errors import ConfigError
from rnnl2.sample import encode_prompt

WORDS = {"vocab": ["<unk>", "the", "cat", "<eos>"], "level": "word", "eos": True, "lowercase": True}
CHARS = {"vocab": ["<unk>", "a", "b", "\n"], "level": "char", "eos": True, "lowercase": False}


def test_a_word_prompt_is_read_as_the_training_text_was():
    assert encode_prompt("The cat\nthe dog", WORDS) == [1, 2, 3, 1, 0]  # newline → <eos>, unseen → <unk>
    assert encode_prompt("ab\nc", CHARS) == [1, 2, 3, 0]


@pytest.mark.parametrize("pipeline, start", [(WORDS, 3), (CHARS, 3)])
def test_an_empty_prompt_starts_at_a_sentence_boundary(pipeline, start):
    assert encode_prompt("", pipeline) == [start]
    assert encode_prompt("  ", WORDS) == [3]  # no word: still the start of a sentence


@pytest.mark.parametrize(
    "pipeline",
    [
        {**WORDS, "vocab": ["<unk>", "the", "cat"], "eos": False},
        {**CHARS, "vocab": ["<unk>", "a", "b"]},
    ],
)
def test_an_empty_prompt_without_a_boundary_token_asks_for_one(pipeline):
    with pytest.raises(ConfigError, match="give a --prompt"):
        encode_prompt("", pipeline)
