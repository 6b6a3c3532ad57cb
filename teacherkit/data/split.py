"""Seeded, stratified train/val/test splits of a COCO dataset at image level.

Stratification is iterative multi-label stratification (Sechidis, Tsoumakas and Vlahavas,
2011): an image's labels are the categories it contains; the rarest remaining label is
placed first, each of its images going to the split that still wants that label most.
This keeps rare classes represented in every split far better than shuffling images.

Every image lands in exactly one split, annotations follow their image, and every split
carries the full ``categories`` list (so class indices agree across splits). The same
data, fractions and seed give the same splits.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from teacherkit.errors import DataError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_fractions(text: str) -> dict[str, float]:
    """``"train:0.7,val:0.15,test:0.15"`` → ``{"train": 0.7, ...}``; ``DataError`` when
    malformed, a name repeats, a fraction is not in (0, 1], or they do not sum to 1."""
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition(":")
        if not sep or not _NAME.match(name):
            raise DataError(f"--split {text!r}: expected name:fraction pairs like train:0.7,val:0.3 "
                            f"(got {part.strip()!r})")
        if name in fractions:
            raise DataError(f"--split {text!r}: split {name!r} is named twice")
        try:
            fraction = float(value)
        except ValueError:
            raise DataError(f"--split {text!r}: {value!r} is not a number") from None
        if not 0 < fraction <= 1:
            raise DataError(f"--split {text!r}: fraction of {name!r} must be in (0, 1], got {fraction}")
        fractions[name] = fraction
    check_fractions(fractions, f"--split {text!r}")
    return fractions


def check_fractions(fractions: dict[str, float], where: str = "fractions") -> None:
    if not fractions:
        raise DataError(f"{where}: no splits given")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise DataError(f"{where}: fractions sum to {total:g}, expected 1")


def _image_labels(coco: dict[str, Any]) -> tuple[list[Any], dict[Any, list[Any]]]:
    image_ids = [img["id"] for img in coco["images"]]
    labels: dict[Any, set[Any]] = {i: set() for i in image_ids}
    for ann in coco.get("annotations", []):
        if ann.get("image_id") in labels:
            labels[ann["image_id"]].add(ann.get("category_id"))
    # sorted by str: category ids are ints in valid data, but never let order depend on a set
    return image_ids, {i: sorted(labs, key=str) for i, labs in labels.items()}


def _target_sizes(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Image counts per split summing to ``n`` (largest remainders)."""
    raw = {name: n * f for name, f in fractions.items()}
    sizes = {name: int(v) for name, v in raw.items()}
    for name in sorted(raw, key=lambda k: (-(raw[k] - sizes[k]), list(raw).index(k)))[: n - sum(sizes.values())]:
        sizes[name] += 1
    return sizes


def assign_stratified(image_ids: list[Any], labels: dict[Any, list[Any]], fractions: dict[str, float],
                      rng: random.Random) -> dict[Any, str]:
    """Iterative stratification: image id → split name."""
    names = list(fractions)
    order = list(image_ids)
    rng.shuffle(order)
    wanted = {n: float(s) for n, s in _target_sizes(len(order), fractions).items()}
    label_count = Counter(lab for i in order for lab in labels[i])
    wanted_label = {n: {lab: c * fractions[n] for lab, c in label_count.items()} for n in names}
    by_label: dict[Any, list[Any]] = {lab: [] for lab in label_count}
    for i in order:
        for lab in labels[i]:
            by_label[lab].append(i)
    remaining = dict(label_count)
    assigned: dict[Any, str] = {}

    def place(image: Any, split: str) -> None:
        assigned[image] = split
        wanted[split] -= 1
        for lab in labels[image]:
            wanted_label[split][lab] -= 1
            remaining[lab] -= 1

    while True:
        live = [lab for lab, c in remaining.items() if c > 0]
        if not live:
            break
        label = min(live, key=lambda lab: (remaining[lab], str(lab)))
        for image in by_label[label]:
            if image in assigned:
                continue
            best = max(names, key=lambda n: (wanted_label[n][label], wanted[n], -names.index(n)))
            place(image, best)
    for image in order:  # images with no labels: fill the splits that still want images
        if image not in assigned:
            best = max(names, key=lambda n: (wanted[n], -names.index(n)))
            place(image, best)
    return assigned


def assign_random(image_ids: list[Any], fractions: dict[str, float], rng: random.Random) -> dict[Any, str]:
    order = list(image_ids)
    rng.shuffle(order)
    assigned: dict[Any, str] = {}
    start = 0
    for name, size in _target_sizes(len(order), fractions).items():
        for image in order[start:start + size]:
            assigned[image] = name
        start += size
    return assigned


def split_coco(coco_dict: dict[str, Any], fractions: dict[str, float], seed: int = 42,
               stratify: bool = True) -> dict[str, dict[str, Any]]:
    """Split a COCO dict into ``{split name: COCO dict}``.

    Images keep their file order inside each split; annotations follow their image; the
    top-level keys other than images/annotations (``info``, ``licenses``,
    ``categories``) are copied to every split. Deterministic for a seed.
    """
    check_fractions(fractions)
    image_ids, labels = _image_labels(coco_dict)
    rng = random.Random(seed)
    if stratify:
        assigned = assign_stratified(image_ids, labels, fractions, rng)
    else:
        assigned = assign_random(image_ids, fractions, rng)
    splits: dict[str, dict[str, Any]] = {}
    for name in fractions:
        part = {k: v for k, v in coco_dict.items() if k not in ("images", "annotations")}
        part["images"] = []
        part["annotations"] = []
        splits[name] = part
    for image in coco_dict["images"]:
        splits[assigned[image["id"]]]["images"].append(image)
    for ann in coco_dict.get("annotations", []):
        split = assigned.get(ann.get("image_id"))
        if split is not None:
            splits[split]["annotations"].append(ann)
    return splits


def split_class_counts(splits: dict[str, dict[str, Any]]) -> dict[str, dict[Any, int]]:
    """Annotations per category id in each split (every category listed, 0 when absent)."""
    out: dict[str, dict[Any, int]] = {}
    for name, part in splits.items():
        counts = Counter(a.get("category_id") for a in part["annotations"])
        out[name] = {c["id"]: counts.get(c["id"], 0) for c in part.get("categories", [])}
    return out


def missing_classes(splits: dict[str, dict[str, Any]]) -> list[tuple[str, Any, str]]:
    """``(split, category id, name)`` for each class absent from a split."""
    out = []
    for name, counts in split_class_counts(splits).items():
        names = {c["id"]: c.get("name") for c in splits[name].get("categories", [])}
        out.extend((name, cid, names[cid]) for cid, n in counts.items() if n == 0)
    return out
