"""Splits: invariants under random data (hypothesis), stratification quality,
byte-identical files for a seed, files that load in pycocotools and validate clean."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teacherkit.cli import run
from teacherkit.data.split import parse_fractions, split_coco
from teacherkit.data.validate import validate_coco
from teacherkit.errors import DataError
from teacherkit.testing import make_coco_dataset

# pycocotools calls numpy with a keyword numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def synthetic(num_images: int, labels: list[list[int]], num_categories: int) -> dict:
    images = [{"id": 10 * i + 3, "file_name": f"{i}.png", "width": 10, "height": 10} for i in range(num_images)]
    anns = []
    for i, labs in enumerate(labels):
        for c in labs:
            anns.append({"id": len(anns) + 1, "image_id": images[i]["id"], "category_id": c, "bbox": [1, 1, 2, 2],
                         "area": 4, "iscrowd": 0})
    cats = [{"id": c, "name": f"c{c}"} for c in range(num_categories)]
    return {"info": {"v": 1}, "images": images, "annotations": anns, "categories": cats}


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 60))
    k = draw(st.integers(1, 6))
    labels = draw(st.lists(st.lists(st.integers(0, k - 1), max_size=4), min_size=n, max_size=n))
    return synthetic(n, labels, k)


fractions_strategy = st.sampled_from([{"train": 0.7, "val": 0.15, "test": 0.15}, {"train": 0.8, "val": 0.2},
                                      {"a": 0.5, "b": 0.25, "c": 0.125, "d": 0.125}, {"all": 1.0}])


@settings(max_examples=60, deadline=None)
@given(datasets(), fractions_strategy, st.integers(0, 2**32 - 1), st.booleans())
def test_split_invariants(coco: dict, fractions: dict, seed: int, stratify: bool) -> None:
    splits = split_coco(coco, fractions, seed=seed, stratify=stratify)
    assert list(splits) == list(fractions)
    ids = [img["id"] for part in splits.values() for img in part["images"]]
    assert sorted(ids) == sorted(img["id"] for img in coco["images"])  # each image exactly once
    for part in splits.values():
        own = {img["id"] for img in part["images"]}
        assert all(a["image_id"] in own for a in part["annotations"])  # annotations follow their image
        assert part["categories"] == coco["categories"] and part["info"] == coco["info"]
    assert sum(len(p["annotations"]) for p in splits.values()) == len(coco["annotations"])
    if stratify:
        assert_rarest_class_in_proportion(coco, splits, fractions)
    else:  # shuffled splits hit their image targets exactly: each within one image of its share
        n = len(coco["images"])
        assert all(abs(len(part["images"]) - n * fractions[name]) < 1 for name, part in splits.items())
    assert split_coco(coco, fractions, seed=seed, stratify=stratify) == splits  # deterministic


def images_per_class(coco: dict, splits: dict) -> tuple[Counter, dict[str, Counter]]:
    """Images holding each class, in the whole file and in each split (an image counts once
    per class, however many of its annotations have that class)."""
    def count(images: list[dict], annotations: list[dict]) -> Counter:
        ids = {img["id"] for img in images}
        return Counter(c for _i, c in {(a["image_id"], a["category_id"]) for a in annotations if a["image_id"] in ids})

    return (count(coco["images"], coco["annotations"]),
            {name: count(part["images"], part["annotations"]) for name, part in splits.items()})


def assert_rarest_class_in_proportion(coco: dict, splits: dict, fractions: dict) -> None:
    """Stratification's promise for any labels: the images of the rarest class (placed
    first, before another class can take a place; ties go to the smaller id as text) are
    spread over the splits in proportion, each split within one image of its share."""
    total, per_split = images_per_class(coco, splits)
    if not total:
        return  # no labels: nothing to stratify
    rarest = min(total, key=lambda c: (total[c], str(c)))
    for name in splits:
        assert abs(per_split[name][rarest] - total[rarest] * fractions[name]) < 1, (name, rarest, per_split)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 6), fractions_strategy, st.integers(0, 2**32 - 1), st.data())
def test_stratified_single_label_images_keep_every_class_in_proportion(n: int, k: int, fractions: dict, seed: int,
                                                                         data: st.DataObject) -> None:
    """Images of one class each (or none): every class, not just the rarest, has each
    split within one image of its share."""
    labels = data.draw(st.lists(st.one_of(st.just([]), st.integers(0, k - 1).map(lambda c: [c, c])),
                                min_size=n, max_size=n))
    coco = synthetic(n, labels, k)
    total, per_split = images_per_class(coco, split_coco(coco, fractions, seed=seed, stratify=True))
    for name, counts in per_split.items():
        for cls, count in total.items():
            assert abs(counts[cls] - count * fractions[name]) < 1, (name, cls, per_split)


def test_stratification_keeps_rare_classes_in_every_split() -> None:
    rng = random.Random(0)
    labels = [[0] for _ in range(400)] + [[1] for _ in range(10)] + [[2] for _ in range(6)]
    rng.shuffle(labels)
    coco = synthetic(len(labels), labels, 3)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    for seed in range(5):
        splits = split_coco(coco, fractions, seed=seed, stratify=True)
        for name, part in splits.items():
            counts = Counter(a["category_id"] for a in part["annotations"])
            assert counts[1] >= 2 and counts[2] >= 1, (seed, name, counts)
            assert abs(counts[1] - 10 * fractions[name]) <= 1
    # plain shuffling loses rare classes from some split for some seed
    lost = any(min(Counter(a["category_id"] for a in p["annotations"])[2] for p in
                   split_coco(coco, fractions, seed=s, stratify=False).values()) == 0 for s in range(20))
    assert lost


def test_parse_fractions() -> None:
    assert parse_fractions("train:0.7,val:0.15,test:0.15") == {"train": 0.7, "val": 0.15, "test": 0.15}
    for bad in ("train:0.7,val:0.2", "train", "train:x,val:1", "train:0,val:1", "../x:1", "a:0.5,a:0.5"):
        with pytest.raises(DataError, match="--split"):
            parse_fractions(bad)


def test_cli_split_is_byte_identical_and_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pycocotools.coco import COCO

    path = make_coco_dataset(tmp_path / "d", num_images=20, mask_format="mixed", seed=5)
    args = ["validate", str(path), "--split", "train:0.6,val:0.2,test:0.2", "--seed", "7"]
    assert run([*args, "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "annotations per class" in text and "train" in text
    assert run([*args, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    for name in ("train", "val", "test"):
        a, b = (tmp_path / "a" / f"{name}.json"), (tmp_path / "b" / f"{name}.json")
        assert a.read_bytes() == b.read_bytes()
        COCO(str(a))
        assert validate_coco(a, images_dir=path.parent).ok
    # a different seed gives a different split; existing files need --force
    assert run([*args[:-1], "8", "--out", str(tmp_path / "a")]) == 2
    assert "--force" in capsys.readouterr().err
    assert run([*args[:-1], "8", "--out", str(tmp_path / "a"), "--force"]) == 0
    capsys.readouterr()
    assert (tmp_path / "a" / "train.json").read_bytes() != (tmp_path / "b" / "train.json").read_bytes()


def test_cli_split_defaults_next_to_the_data_and_validates_clean(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = make_coco_dataset(tmp_path / "d", num_images=12, seed=2)
    assert run(["validate", str(path), "--split", "train:0.5,val:0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["splits"]) >= {"train", "val"}
    for name in ("train", "val"):
        split_file = path.parent / f"{name}.json"
        assert run(["validate", str(split_file)]) == 0
    capsys.readouterr()


def test_cli_split_refuses_with_errors_and_warns_missing_class(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = make_coco_dataset(tmp_path / "d", num_images=10, seed=1)
    data = json.loads(path.read_text())
    data["categories"].append({"id": 50, "name": "rare"})
    data["annotations"].append({**data["annotations"][0], "id": 999, "category_id": 50})
    data["annotations"][1]["category_id"] = 77  # dangling: an error
    path.write_text(json.dumps(data))
    out = tmp_path / "s"
    assert run(["validate", str(path), "--split", "train:0.5,val:0.5", "--out", str(out)]) == 1
    assert "not splitting" in capsys.readouterr().out and not out.exists()
    fixed = tmp_path / "fixed.json"
    code = run(["validate", str(path), "--fix", str(fixed), "--split", "train:0.5,val:0.5", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "split.rare_class" in text
    assert "has no annotation in split" in text  # the one-image class misses a split
    assert (out / "train.json").exists() and (out / "val.json").exists()
