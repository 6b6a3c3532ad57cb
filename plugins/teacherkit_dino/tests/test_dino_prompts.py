"""Prompts: exact phrase ↔ class maps, refusals, and chunking beyond max_text_len."""

from __future__ import annotations

import random

import pytest
import torch
from dino_helpers import info_from_categories
from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

from teacherkit.errors import TeacherkitError
from teacherkit_dino.prompts import DOT_ID, PromptBuilder, PromptError
from teacherkit_dino.tokenizer import BERT_SPECIAL, build_tiny_tokenizer, token_ids


def builder(names: list[str], ids: list[int] | None = None, max_text_len: int = 256) -> PromptBuilder:
    tok = build_tiny_tokenizer(names)
    return PromptBuilder(names, ids or list(range(1, len(names) + 1)), lambda t: token_ids(tok, t),
                         max_text_len=max_text_len, source="train.json")


def hf_phrase_tokens(prompt, max_len: int = 256) -> list[list[int]]:
    """Token positions of each phrase as transformers' loss sees them."""
    ids = torch.tensor([prompt.input_ids])
    maps = build_label_maps(torch.zeros(1, 1, max_len), ids)[0]
    return [torch.nonzero(row).flatten().tolist() for row in maps]


def test_tiny_tokenizer_keeps_bert_special_ids():
    tok = build_tiny_tokenizer(["traffic light", "cat"])
    for token, index in BERT_SPECIAL.items():
        assert tok.convert_tokens_to_ids(token) == index
    assert len(tok) >= 1030
    ids = tok("traffic light . cat ?")["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102 and 1012 in ids and 1029 in ids
    assert tok.convert_ids_to_tokens(token_ids(tok, "traffic light")) == ["traffic", "light"]
    # A word not among the class names still tokenizes (letter pieces), not to [UNK].
    assert 100 not in token_ids(tok, "zebra")


@pytest.mark.parametrize(
    "names",
    [
        ["square", "circle", "triangle"],
        ["traffic light", "fire hydrant", "person"],
        ["st. bernard", "e.g. cup", "what?", "t-shirt", "dog"],  # delimiters inside names
        ["Café au lait", "naïve bayes", "x"],
    ],
)
def test_phrase_map_matches_transformers_label_maps(names):
    b = builder(names)
    prompt = b.full
    assert prompt.classes == tuple(range(len(names)))
    groups = hf_phrase_tokens(prompt)
    assert len(groups) == len(names), b.text(prompt)
    for (start, end), positions in zip(prompt.spans, groups, strict=True):
        assert positions == list(range(start, end))
    # Every class is followed by '.', and no '.' survives inside a name.
    assert [prompt.input_ids[e] for _, e in prompt.spans] == [DOT_ID] * len(names)


def test_gapped_ids_and_id_zero_map_by_class_index():
    info = info_from_categories([{"id": 0, "name": "zero"}, {"id": 42, "name": "answer"}, {"id": 5, "name": "five"}])
    b = builder(info.class_names, [c["id"] for c in info.categories])
    # Sorted by id: 0, 5, 42 → class indices 0, 1, 2 → phrases in that order.
    assert info.class_names == ["zero", "five", "answer"]
    assert b.full.phrase_of() == {0: 0, 1: 1, 2: 2}
    assert [info.category_id_of(c) for c in b.full.classes] == [0, 5, 42]


@pytest.mark.parametrize("names", [["Cat", "cat"], ["dog", "Dog "], ["traffic light", "traffic  light"]])
def test_duplicate_names_refused_naming_both_ids(names):
    with pytest.raises(PromptError) as err:
        builder(names, [4, 9])
    message = str(err.value)
    assert "train.json" in message and "4" in message and "9" in message
    assert isinstance(err.value, TeacherkitError)


@pytest.mark.parametrize("bad", ["", ".", " ? "])
def test_name_without_words_refused(bad):
    with pytest.raises(PromptError, match="category id 2"):
        builder(["ok", bad], [1, 2])


def test_300_classes_are_chunked_and_cover_every_class_once():
    names = [f"object number {i}" for i in range(300)]
    b = builder(names)
    assert not b.fits and len(b.chunks) > 1
    covered = [c for chunk in b.chunks for c in chunk.classes]
    assert covered == list(range(300))
    for chunk in b.chunks:
        assert len(chunk) <= 256
        assert len(hf_phrase_tokens(chunk)) == len(chunk.classes)
    with pytest.raises(PromptError):
        _ = b.full


def test_training_prompt_holds_positives_and_fills_with_negatives():
    names = [f"object number {i}" for i in range(300)]
    b = builder(names)
    rng = random.Random(0)
    positives = [3, 150, 299, 150]
    prompts = [b.for_sample(positives, rng) for _ in range(5)]
    for p in prompts:
        assert {3, 150, 299} <= set(p.classes)
        assert len(set(p.classes)) == len(p.classes)
        assert len(p) <= 256
        # Filled up: one more class would not fit.
        assert len(p) + min(b.cost(c) for c in range(300)) > 256
        assert len(hf_phrase_tokens(p)) == len(p.classes)
    # Negatives vary between draws; evaluation (rng=None) is deterministic.
    assert len({p.classes for p in prompts}) > 1
    assert b.for_sample(positives, None) == b.for_sample(positives, None)


def test_small_class_sets_use_one_shared_prompt():
    b = builder(["a", "b", "c"])
    assert b.fits
    assert b.for_sample([2], random.Random(1)) == b.full


def test_too_long_class_name_refused():
    with pytest.raises(PromptError, match="longer than one prompt"):
        builder(["word " * 20, "b"], max_text_len=16)
