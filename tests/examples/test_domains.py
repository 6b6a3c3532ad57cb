"""The synthetic domains: seeded and byte-identical, valid COCO, and shifted the way the
docs say (domain B: smaller objects, textured backgrounds, circles drawn as rings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.examples.example_paths import EXAMPLES

import domains


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    first = domains.write_split(tmp_path / "one", domains.DOMAIN_B, "train", 6, seed=5)
    second = domains.write_split(tmp_path / "two", domains.DOMAIN_B, "train", 6, seed=5)
    assert _files(first.parent) == _files(second.parent)
    other = domains.write_split(tmp_path / "three", domains.DOMAIN_B, "train", 6, seed=6)
    assert _files(other.parent) != _files(first.parent)


@pytest.mark.parametrize("domain", [domains.DOMAIN_A, domains.DOMAIN_B], ids=lambda d: d.name)
def test_split_is_valid_coco_whose_boxes_fit_the_masks(tmp_path, domain):
    from pycocotools.coco import COCO

    from teacherkit.data.validate import validate_coco

    path = domains.write_split(tmp_path, domain, "val", 8, seed=2)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 8 and coco.getAnnIds()
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert ann["area"] == mask.sum()
    report = validate_coco(path)
    assert report.ok and not report.warnings, report.findings


def _stats(domain, n=24):
    import random

    rng = random.Random(0)
    sizes, holes, background_std = [], [], []
    for _ in range(n):
        pixels, objects = domains.draw_image(rng, domain)
        covered = np.zeros(pixels.shape[:2], bool)
        for obj in objects:
            ys, xs = np.nonzero(obj["mask"])
            sizes.append(xs.max() - xs.min() + 1)
            covered |= obj["mask"].astype(bool)
            if obj["category_id"] == 2:  # circle: is its centre inside the mask?
                holes.append(obj["mask"][int(ys.mean()), int(xs.mean())] == 0)
        background_std.append(pixels[~covered].std(axis=0).mean())  # per channel: 0 on a plain colour
    return np.mean(sizes), holes, np.mean(background_std)


def test_domain_b_is_shifted_from_domain_a():
    size_a, holes_a, texture_a = _stats(domains.DOMAIN_A)
    size_b, holes_b, texture_b = _stats(domains.DOMAIN_B)
    assert size_b < 0.85 * size_a  # smaller objects (radius 9-17% of the side against 12-24%)
    assert texture_a < 1 and texture_b > 10  # plain vs textured/cluttered backgrounds
    assert holes_a and not any(holes_a)  # filled discs in A
    assert holes_b and all(holes_b)  # rings (a hole in the mask) in B


def test_shipped_splits_match_the_generator(tmp_path):
    """The shipped files are what ``python examples/domains.py`` writes."""
    for name, splits in domains.SPLITS.items():
        for split, (count, _seed) in splits.items():
            data = json.loads((EXAMPLES / name / f"{split}.json").read_text())
            assert len(data["images"]) == count, (name, split)
            assert data["categories"] == domains.CATEGORIES
            assert all((EXAMPLES / name / im["file_name"]).is_file() for im in data["images"])
    count, seed = domains.SPLITS["domain_b"]["val"]
    fresh = domains.write_split(tmp_path, domains.DOMAIN_B, "val", count, seed)
    assert fresh.read_bytes() == (EXAMPLES / "domain_b" / "val.json").read_bytes()
    for image in json.loads(fresh.read_text())["images"][:4]:
        assert (tmp_path / image["file_name"]).read_bytes() == (EXAMPLES / "domain_b" / image["file_name"]).read_bytes()
