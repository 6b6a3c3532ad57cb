"""A BERT tokenizer built locally from the class names, for the ``tiny`` preset.

The real Grounding DINO uses ``bert-base-uncased``; nothing here may download it. The
model and its loss, however, find phrases by BERT's ids (``[CLS]`` 101, ``[SEP]`` 102,
``.`` 1012, ``?`` 1029, ``[PAD]`` 0), so the local vocabulary keeps every special token
at its BERT id, fills the gaps with ``[unusedN]``, and appends the words of the class
names plus single characters (and their ``##`` continuations) so that any other word
still tokenizes, letter by letter, instead of collapsing to ``[UNK]``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

#: BERT's fixed ids that transformers' Grounding DINO relies on.
BERT_SPECIAL = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
_FIRST_FREE_ID = 1030


def _pre_tokenize(names: Sequence[str]) -> list[str]:
    """Split names the way BERT's normalizer and pre-tokenizer do (lower case, accents
    stripped, punctuation split off)."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: list[str] = []
    for name in names:
        words.extend(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(str(name))))
    return words


def tiny_vocabulary(class_names: Sequence[str]) -> dict[str, int]:
    """Token → id: BERT's special ids in place, then characters and class-name words."""
    vocab: dict[str, int] = {}
    for i in range(_FIRST_FREE_ID):
        vocab[f"[unused{i}]"] = i
    # BERT's special tokens replace the placeholders at their real ids.
    inverse = {i: t for t, i in BERT_SPECIAL.items()}
    vocab = {inverse.get(i, token): i for token, i in vocab.items()}
    words = _pre_tokenize(class_names)
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation) | {c for w in words for c in w})
    extra = [c for c in chars] + [f"##{c}" for c in chars] + sorted(set(words))
    for token in extra:
        if token not in vocab:
            vocab[token] = len(vocab)
    return vocab


def build_tiny_tokenizer(class_names: Sequence[str]) -> Any:
    """A ``transformers.BertTokenizer`` over :func:`tiny_vocabulary`; saved with the tiny
    base so it reloads with ``AutoTokenizer.from_pretrained``."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=tiny_vocabulary(class_names), do_lower_case=True, model_max_length=512)


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` without ``[CLS]``/``[SEP]``."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
