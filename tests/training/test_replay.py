"""Replay (rehearsal): source-domain images mixed into every training epoch.

``training.replay`` (``--replay``/``--replay-fraction``) adds ``round(fraction x training
images)`` replay images to each epoch, drawn afresh each epoch from the run's seed; the
replay file's categories are matched to the training file's by name.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from teacherkit.cli import run
from teacherkit.data.coco import load_coco
from teacherkit.errors import DataError
from teacherkit.training.dataset import ReplayMix, remap_replay, replay_category_map, replay_count


class _Items:
    """A stand-in dataset: item ``i`` is ``(tag, i, epoch)``."""

    def __init__(self, tag: str, n: int) -> None:
        self.tag, self.n, self.epoch = tag, n, 0
        self.preprocessor = object()

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        assert 0 <= i < self.n
        return (self.tag, i, self.epoch)


def _mix(n_train=96, n_replay=480, fraction=0.5, seed=42):
    return ReplayMix(_Items("train", n_train), _Items("replay", n_replay),
                     per_epoch=replay_count(n_train, fraction), seed=seed)


@pytest.mark.parametrize(("n_train", "fraction", "expected"),
                         [(96, 0.5, 48), (96, 0.25, 24), (10, 0.33, 3), (4, 0.01, 1), (8, 2.0, 16)])
def test_each_epoch_adds_the_requested_fraction(n_train, fraction, expected):
    mix = _mix(n_train=n_train, fraction=fraction)
    assert mix.per_epoch == expected and len(mix) == n_train + expected
    for epoch in range(3):
        mix.set_epoch(epoch)
        items = [mix[i] for i in range(len(mix))]
        tags = Counter(tag for tag, _i, _e in items)
        assert tags == {"train": n_train, "replay": expected}
        assert [i for tag, i, _e in items if tag == "train"] == list(range(n_train))  # every training image once
        assert all(e == epoch for _t, _i, e in items)  # both parts know the epoch (augmentation seeds)
        replayed = [i for tag, i, _e in items if tag == "replay"]
        assert len(set(replayed)) == len(replayed)  # no repeats while the replay file has enough images
    with pytest.raises(IndexError):
        mix[len(mix)]


def test_replay_draws_are_deterministic_per_seed_and_change_per_epoch():
    a, b, other = _mix(seed=7), _mix(seed=7), _mix(seed=8)
    draws = []
    for epoch in range(4):
        for mix in (a, b, other):
            mix.set_epoch(epoch)
        assert a.chosen == b.chosen
        assert a.chosen != other.chosen
        draws.append(tuple(a.chosen))
    assert len(set(draws)) == 4  # a fresh draw every epoch, so more of the source data is seen
    a.set_epoch(1)
    assert tuple(a.chosen) == draws[1]  # going back to an epoch (a resume) gives the same draw


def test_a_small_replay_file_is_used_evenly_before_any_image_repeats():
    mix = _mix(n_train=20, n_replay=6, fraction=1.0)  # 20 replay slots from 6 images
    counts = Counter(mix.chosen)
    assert sorted(counts) == list(range(6)) and max(counts.values()) - min(counts.values()) <= 1


def _coco(tmp_path: Path, name: str, categories, *, seed=0, masks=True) -> Path:
    from teacherkit.data.synthetic import make_coco_dataset

    return make_coco_dataset(tmp_path / name, num_images=6, size=(64, 64), categories=categories, seed=seed,
                             masks=masks)


def test_categories_are_matched_by_name_not_id_ignoring_case_and_spacing(tmp_path):
    train = _coco(tmp_path, "train", ["square", "circle", "triangle"])
    replay = _coco(tmp_path, "replay", [{"id": 20, "name": "circle"}, {"id": 10, "name": " Square"},
                                        {"id": 30, "name": "unused"}], seed=1)
    # drop the annotations of the extra category: declared but never used is fine
    data = json.loads(replay.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 30]
    replay.write_text(json.dumps(data))
    train_coco, replay_coco = load_coco(train), load_coco(replay)
    assert replay_category_map(replay_coco, replay, train_coco.categories, train) == {20: 2, 10: 1}
    remapped = remap_replay(replay_coco, replay, train_coco.categories, train)
    assert [c.name for c in remapped.categories] == ["square", "circle", "triangle"]
    names = {c.id: c.name.strip().lower() for c in replay_coco.categories}
    before = [names[a.category_id] for a in replay_coco.annotations]
    after = [{1: "square", 2: "circle"}[a.category_id] for a in remapped.annotations]
    assert before == after and len(after) > 0


def test_a_replay_category_the_training_file_lacks_is_an_error_naming_file_and_category(tmp_path):
    train = _coco(tmp_path, "train", ["square", "circle", "triangle"])
    replay = _coco(tmp_path, "replay", ["square", "hexagon"], seed=1)
    assert any(a["category_id"] == 2 for a in json.loads(replay.read_text())["annotations"])
    with pytest.raises(DataError) as err:
        remap_replay(load_coco(replay), replay, load_coco(train).categories, train)
    message = str(err.value)
    assert str(replay) in message and "'hexagon'" in message and str(train) in message
    assert "'square', 'circle', 'triangle'" in message


def test_replayed_samples_carry_training_labels(tmp_path, plugin_host):
    """A replay sample comes out of the real dataset with the training file's category ids
    and class indices, whatever ids the replay file used."""
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.training.dataset import CocoTrainDataset

    train = _coco(tmp_path, "train", ["square", "circle", "triangle"])
    replay = _coco(tmp_path, "replay", [{"id": 7, "name": "triangle"}, {"id": 8, "name": "square"}], seed=3)
    train_coco = load_coco(train)
    info = inspect_dataset(train_coco, host=plugin_host)
    remapped = remap_replay(load_coco(replay), replay, train_coco.categories, train)
    common = {"learns_from": "boxes", "train": True, "with_masks": True}
    mix = ReplayMix(CocoTrainDataset(train_coco, train.parent, info, None, **common),
                    CocoTrainDataset(remapped, replay.parent, info, None, seed=5, **common), per_epoch=4, seed=0)
    replayed = [mix.raw_sample(i) for i in range(6, len(mix))]
    assert len(replayed) == 4
    ids = {int(c) for s in replayed for c in s["category_ids"]}
    assert ids and ids <= {1, 3}  # square and triangle, in the training file's ids
    for s in replayed:
        assert [info.class_mapping[int(c)] for c in s["category_ids"]] == s["labels"].tolist()
        assert s["masks"].shape[0] == len(s["boxes"])


FAST = ["--preset", "tiny", "--epochs", "1", "--batch-size", "3", "--num-workers", "0",
        "--set", "teachers.grounding_dino.shortest_edge=64", "--set", "teachers.grounding_dino.longest_edge=64",
        "--set", "teachers.sam.image_size=64"]


def test_cli_replay_errors_are_one_line(tmp_path, capsys):
    train = _coco(tmp_path, "train", ["square", "circle", "triangle"])
    bad = _coco(tmp_path, "bad", ["square", "hexagon"], seed=1)
    base = ["train", "--data", str(train), "--val", str(train), *FAST]
    assert run([*base, "--output", str(tmp_path / "x"), "--replay", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "--replay" in err and "missing.json: file not found" in err and "Traceback" not in err
    assert run([*base, "--output", str(tmp_path / "y"), "--replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: replay category 'hexagon'") and str(train) in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()  # a missing file fails before any output
    assert run([*base, "--output", str(tmp_path / "w"), "--set", f"training.replay.data={tmp_path / 'gone.json'}"]) == 2
    err = capsys.readouterr().err
    assert "training.replay.data" in err and "gone.json: file not found" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()  # checked before the output folder is made (or --overwrite deletes one)
    assert run([*base, "--output", str(tmp_path / "z"), "--replay", str(train), "--replay-fraction", "0"]) == 2
    assert "training.replay.fraction" in capsys.readouterr().err


@pytest.mark.slow
def test_train_with_replay_records_it_and_skips_teachers_it_cannot_feed(tmp_path, capsys):
    train = _coco(tmp_path, "train", ["square", "circle", "triangle"])
    val = _coco(tmp_path, "val", ["square", "circle", "triangle"], seed=2)
    boxes_only = _coco(tmp_path, "replay", ["triangle", "square"], seed=4, masks=False)
    out = tmp_path / "exp"
    assert run(["train", "--data", str(train), "--val", str(val), "--output", str(out), *FAST,
                "--replay", str(boxes_only), "--replay-fraction", "0.5"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "replay: 3 images per epoch (fraction 0.5) drawn from 6" in text
    assert "has no 'masks' annotations; sam trains without replay" in text
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "finished"
    replay = meta["data"]["replay"]
    assert replay["path"] == str(boxes_only) and replay["num_images"] == 6 and replay["fraction"] == 0.5
    assert replay["fingerprint"].startswith("sha256:")
    saved = (out / "teacher_config.yaml").read_text()
    assert f"data: {boxes_only}" in saved  # --config of the saved file replays the same data
