"""``label --workers``: images read (and preprocessed for the box teacher) in DataLoader
workers, in order, failures recorded with their reason, workers deaf to Ctrl-C; and the output
is the same bytes whatever the number of workers, torn shard and ``--resume`` included."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from teacherkit.cli import run
from teacherkit.inference.label import partial_path
from teacherkit.inference.label_loader import default_workers, image_batches

BOMB_SIDE = 20_000  # over twice Pillow's pixel limit


def _bomb(path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from coco_failure_cases import png_header

    path.write_bytes(png_header(BOMB_SIDE, BOMB_SIDE))


class SignalProbe:
    """A picklable stand-in preprocessor: what it saw, and whether Ctrl-C reached it."""

    def __call__(self, sample, *, train):
        return {"image_id": sample["image_id"], "mean": float(sample["image"].mean()), "train": train,
                "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}


class Unpicklable(SignalProbe):
    def __init__(self):
        self.hook = lambda: None  # a lambda does not pickle


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for k in range(5):
        Image.fromarray(np.full((6 + k, 8, 3), 40 * k, np.uint8)).save(images / f"img_{k}.png")
    (images / "img_1b.png").write_bytes(b"not an image")
    _bomb(images / "img_3b.png")
    (tmp_path / "outside.png").write_bytes((images / "img_0.png").read_bytes())
    (images / "img_4b.png").symlink_to(tmp_path / "outside.png")
    return images


def _read(folder, workers, preprocessor=None, batch_size=3):
    files = sorted(folder.iterdir())
    refused = {folder / "img_4b.png"}
    return list(image_batches(files, refused, batch_size, workers=workers, preprocessor=preprocessor))


def test_workers_read_the_batches_in_order_with_each_failure_and_its_reason(folder):
    here, there = _read(folder, 0), _read(folder, 2)
    assert [[i.path.name for i in b] for b in there] == [["img_0.png", "img_1.png", "img_1b.png"],
                                                        ["img_2.png", "img_3.png", "img_3b.png"],
                                                        ["img_4.png", "img_4b.png"]]
    for a, b in zip(sum(here, []), sum(there, []), strict=True):
        assert a.path == b.path and a.reason == b.reason
        assert (a.pixels is None and b.pixels is None) or np.array_equal(a.pixels, b.pixels)
    reasons = {i.path.name: i.reason for i in sum(there, []) if i.reason}
    assert set(reasons) == {"img_1b.png", "img_3b.png", "img_4b.png"}
    assert "cannot read image" in reasons["img_1b.png"] and "too many pixels" in reasons["img_3b.png"]
    assert "--allow-outside-images" in reasons["img_4b.png"]


def test_workers_preprocess_with_the_ids_of_the_batch_and_ignore_ctrl_c(folder):
    batches = _read(folder, 2, SignalProbe())
    first = batches[0]
    # the unreadable image gets no inputs; ids count the readable images of the batch, as predict_images does
    assert [i.prepared and i.prepared["image_id"] for i in first] == [0, 1, None]
    prepared = [i.prepared for b in batches for i in b if i.prepared]
    assert all(p["sigint_ignored"] and p["train"] is False for p in prepared)
    assert [p["mean"] for p in prepared] == [float(i.pixels.mean()) for b in batches for i in b if i.prepared]
    # in the main process (0 workers) Ctrl-C still stops the run
    assert not any(i.prepared["sigint_ignored"] for b in _read(folder, 0, SignalProbe()) for i in b if i.prepared)


def test_a_preprocessor_that_cannot_go_to_a_worker_is_left_to_the_main_process(folder):
    batches = _read(folder, 1, Unpicklable())
    assert all(i.prepared is None for b in batches for i in b)
    assert all(i.prepared is not None for b in _read(folder, 0, Unpicklable()) for i in b if i.pixels is not None)


def test_stopping_early_stops_the_workers(folder):
    import multiprocessing

    batches = image_batches(sorted(folder.iterdir()), set(), 1, workers=2)
    next(batches)
    assert multiprocessing.active_children()
    batches.close()
    assert not multiprocessing.active_children()


def test_the_default_is_two_workers_at_most_the_cpus():
    import os

    assert 1 <= default_workers() <= min(2, len(os.sched_getaffinity(0)))


def test_a_negative_number_of_workers_is_refused(tmp_path, capsys):
    assert run(["label", str(tmp_path), "--images", str(tmp_path), "--workers", "-1"]) == 2
    assert "--workers" in capsys.readouterr().err


# -- on the tiny trained experiment ----------------------------------------------------


@pytest.fixture
def images(tiny_experiment, tmp_path):
    folder = tmp_path / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, folder, ignore=shutil.ignore_patterns("*.json"))
    (folder / "img_0000b.png").write_bytes(b"broken")  # a failure between labelled images
    return folder


@pytest.mark.slow
def test_the_output_is_the_same_bytes_whatever_the_workers(tiny_experiment, images, tmp_path, monkeypatch):
    import teacherkit.inference.label_loader as label_loader
    from teacherkit.inference import load_experiment
    from teacherkit.inference.label import label_images

    exp = load_experiment(tiny_experiment["path"], device="cpu")
    outputs = {}
    for workers in (0, 2):
        outputs[workers] = tmp_path / f"w{workers}.json"
        report = label_images(exp, images, outputs[workers], batch_size=2, workers=workers)
        assert report.labelled == 3 and [name for name, _ in report.skipped] == ["img_0000b.png"]
    # the box teacher's inputs made in the main process, as before workers made them
    monkeypatch.setattr(label_loader, "picklable", lambda _: False)
    before = tmp_path / "main.json"
    label_images(exp, images, before, batch_size=2, workers=2)
    assert outputs[0].read_bytes() == outputs[2].read_bytes() == before.read_bytes()


@pytest.mark.slow
def test_a_torn_shard_resumes_with_workers_to_the_same_bytes(tiny_experiment, images, tmp_path):
    from teacherkit.inference import load_experiment
    from teacherkit.inference.label import label_images

    exp = load_experiment(tiny_experiment["path"], device="cpu")
    straight = tmp_path / "straight.json"
    label_images(exp, images, straight, batch_size=1, workers=0)

    def stop_after_three(done, total):
        if done >= 3:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.json"
    with pytest.raises(KeyboardInterrupt):
        label_images(exp, images, out, batch_size=1, workers=2, progress=stop_after_three)
    partial = partial_path(out)
    lines = partial.read_text().splitlines(keepends=True)
    partial.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # the third record torn by the kill
    report = label_images(exp, images, out, batch_size=1, workers=2, resume=True)
    assert report.resumed_from == 2
    assert out.read_bytes() == straight.read_bytes()
    assert not partial.exists()
    assert json.loads(out.read_text())["info"]["images_failed"][0]["file_name"] == "img_0000b.png"
