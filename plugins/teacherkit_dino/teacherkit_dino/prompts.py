"""Text prompts: class names → token ids, with an exact phrase ↔ category map.

Grounding DINO reads a prompt such as ``"cat . traffic light ."`` and scores every
query against every *token*. transformers' loss and label maps find the phrases by
token id: ``[CLS]`` (101), ``[SEP]`` (102), ``.`` (1012), ``?`` (1029) and ``[PAD]`` (0)
are delimiters, everything between two delimiters is one phrase, and phrase *k* is the
*k*-th such group. So a class name that itself tokenizes to a ``.`` ("st. bernard")
would silently become two phrases and shift every later class: the classic
"mAP ≈ 0" bug. We therefore build the ids ourselves from per-class token lists with
the delimiter ids removed, and keep, per prompt, the list ``phrase → class index``.

Nothing here imports torch: the preprocessor (DataLoader workers) and tests use it
as plain Python.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from teacherkit.errors import DataError

CLS_ID, SEP_ID, DOT_ID, QUESTION_ID, PAD_ID = 101, 102, 1012, 1029, 0
#: ids that split phrases in transformers' Grounding DINO (``SPECIAL_TOKENS`` + pad).
DELIMITER_IDS = frozenset({CLS_ID, SEP_ID, DOT_ID, QUESTION_ID, PAD_ID})


class PromptError(DataError):
    """Class names that cannot form a valid prompt (empty, duplicate, too long)."""


@dataclass(frozen=True)
class Prompt:
    """One tokenized prompt.

    :param input_ids: ``[CLS] name0 . name1 . … [SEP]``.
    :param classes: contiguous class index of each phrase, in prompt order.
    :param spans: ``(start, end)`` token positions of each phrase (end exclusive).
    """

    input_ids: tuple[int, ...]
    classes: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    def phrase_of(self) -> dict[int, int]:
        """class index → phrase index in this prompt."""
        return {c: k for k, c in enumerate(self.classes)}


class PromptBuilder:
    """Builds prompts for a fixed list of classes.

    :param class_names: names indexed by contiguous class index.
    :param category_ids: the COCO id of each class (only for error messages).
    :param tokenize: ``name -> list[int]`` without special tokens (a tokenizer call).
    :param max_text_len: token limit of one prompt, ``[CLS]`` and ``[SEP]`` included.
    :param source: where the names come from (file name), for error messages.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        category_ids: Sequence[int],
        tokenize: Callable[[str], Sequence[int]],
        max_text_len: int = 256,
        source: str | None = None,
    ) -> None:
        if len(class_names) != len(category_ids):
            raise ValueError("class_names and category_ids differ in length")
        if not class_names:
            raise PromptError(f"{source or 'dataset'}: no categories, nothing to prompt for")
        self.class_names = list(class_names)
        self.category_ids = [int(c) for c in category_ids]
        self.max_text_len = int(max_text_len)
        where = source or "dataset"
        self.class_tokens: list[tuple[int, ...]] = []
        seen: dict[tuple[int, ...], int] = {}
        for index, (name, cat_id) in enumerate(zip(self.class_names, self.category_ids, strict=True)):
            # Delimiter ids inside a name would split it into several phrases; drop them.
            tokens = tuple(int(t) for t in tokenize(str(name)) if int(t) not in DELIMITER_IDS)
            if not tokens:
                raise PromptError(
                    f"{where}: category id {cat_id} has name {name!r}, which has no words once the phrase "
                    f"delimiters '.' and '?' are removed; give it a descriptive name in 'categories'"
                )
            if len(tokens) + 3 > self.max_text_len:
                raise PromptError(
                    f"{where}: category id {cat_id} name {name!r} is {len(tokens)} tokens, longer than one prompt "
                    f"allows (max_text_len {self.max_text_len}); shorten it"
                )
            if tokens in seen:
                other = seen[tokens]
                raise PromptError(
                    f"{where}: category ids {self.category_ids[other]} ({self.class_names[other]!r}) and {cat_id} "
                    f"({name!r}) read the same to the text encoder; the detector could not tell them apart. "
                    f"Rename or merge them in 'categories'"
                )
            seen[tokens] = index
            self.class_tokens.append(tokens)
        self.chunks: list[Prompt] = self._pack(list(range(len(self.class_names))))

    # -- building --------------------------------------------------------------------------
    def cost(self, class_index: int) -> int:
        """Tokens a class adds to a prompt (its words and the '.' after them)."""
        return len(self.class_tokens[class_index]) + 1

    def build(self, classes: Sequence[int]) -> Prompt:
        """The prompt for ``classes`` in the given order; raises if it does not fit."""
        ids = [CLS_ID]
        spans = []
        for c in classes:
            start = len(ids)
            ids.extend(self.class_tokens[c])
            spans.append((start, len(ids)))
            ids.append(DOT_ID)
        ids.append(SEP_ID)
        if len(ids) > self.max_text_len:
            raise PromptError(
                f"prompt of {len(classes)} classes is {len(ids)} tokens > max_text_len {self.max_text_len}"
            )
        return Prompt(tuple(ids), tuple(int(c) for c in classes), tuple(spans))

    def _pack(self, classes: Sequence[int]) -> list[Prompt]:
        """Split ``classes`` (in order) into as few prompts as fit the limit."""
        chunks: list[Prompt] = []
        current: list[int] = []
        used = 2  # [CLS] and [SEP]
        for c in classes:
            if current and used + self.cost(c) > self.max_text_len:
                chunks.append(self.build(current))
                current, used = [], 2
            current.append(c)
            used += self.cost(c)
        if current:
            chunks.append(self.build(current))
        return chunks

    @property
    def fits(self) -> bool:
        """Whether every class fits one prompt."""
        return len(self.chunks) == 1

    @property
    def full(self) -> Prompt:
        """The one prompt of all classes (only when :attr:`fits`)."""
        if not self.fits:
            raise PromptError(f"{len(self.class_names)} classes do not fit one prompt of {self.max_text_len} tokens")
        return self.chunks[0]

    def for_sample(self, positives: Sequence[int], rng: random.Random | None) -> Prompt:
        """The prompt of one training sample.

        When all classes fit, this is the full prompt (the same for every sample, so a
        batch shares it). Otherwise: the sample's positive classes, then negatives drawn
        at random (``rng``; ``None`` takes them in class order, which is deterministic for
        evaluation) until the limit, in shuffled order so no class owns a position.
        Positives that do not fit are left out; the caller drops their boxes.
        """
        if self.fits:
            return self.full
        chosen: list[int] = []
        used = 2
        for c in dict.fromkeys(int(p) for p in positives):
            if used + self.cost(c) <= self.max_text_len:
                chosen.append(c)
                used += self.cost(c)
        taken = set(chosen)
        negatives = [c for c in range(len(self.class_names)) if c not in taken]
        if rng is not None:
            rng.shuffle(negatives)
        for c in negatives:
            if used + self.cost(c) <= self.max_text_len:
                chosen.append(c)
                used += self.cost(c)
            elif used + 2 > self.max_text_len:  # nothing more can fit
                break
        if rng is not None:
            rng.shuffle(chosen)
        return self.build(chosen)

    def text(self, prompt: Prompt) -> str:
        """The prompt as readable text (``"cat . traffic light ."``), for logs and docs."""
        return " ".join(f"{self.class_names[c]} ." for c in prompt.classes)
