"""Review of ``label``'s readers and of its ``--resume`` check: a flag spelled out with the
value it has anyway changes no label and must not refuse a resume; Ctrl-C while the main
process waits for a batch must stop the readers, not leave them to whoever holds the
traceback (a notebook keeps the last one)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

from teacherkit.cli import run
from teacherkit.inference.label_loader import image_batches
from teacherkit.inference.label_settings import differences, label_settings
from teacherkit.inference.label_thresholds import ScoreThresholds, parse_score_threshold


@pytest.fixture(scope="module")
def experiment(tiny_experiment):
    from teacherkit.inference import load_experiment

    return load_experiment(tiny_experiment["path"], device="cpu")


def _settings(exp, *, classes=None, thresholds=None, **overrides):
    return label_settings(exp, adapter_scale=1.0, classes=classes, thresholds=thresholds, overrides=overrides)


@pytest.mark.slow
def test_a_flag_given_its_own_value_is_no_change(experiment):
    box = experiment.config.teacher(experiment.box_teacher_name("labelling"))
    every = [str(c["name"]) for c in experiment.info.categories]
    plain = _settings(experiment)
    spelled = _settings(experiment, classes=list(reversed(every)), box_threshold=box.box_threshold,
                        text_threshold=box.text_threshold)
    assert differences(plain, spelled) == []
    # the check still sees real changes
    changed = _settings(experiment, classes=every[:1], box_threshold=min(1.0, box.box_threshold + 0.5))
    assert [line.split(":")[0] for line in differences(plain, changed)] == ["--classes", "--box-threshold"]


def test_the_score_cut_is_compared_by_its_numbers_not_by_where_the_default_came_from(tmp_path):
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    recorded = ScoreThresholds(default=0.4, default_from=str(tmp_path / "curves.json"),
                               names={1: "cat", 2: "dog"})
    base = {"score_thresholds": recorded.record()}

    def now(spec):
        return {"score_thresholds": parse_score_threshold(spec, categories).record()}

    assert differences(base, now("0.4")) == []
    assert differences(base, now("0.40,cat=0.4")) == []  # a class's cut equal to the default
    assert differences(base, now("0.5")) == [f"--score-threshold: recorded 0.4 (best F1 from {tmp_path}/curves.json), "
                                             "now 0.5"]
    assert differences(base, now("0.4,cat=0.5")) != []


@pytest.mark.slow
def test_resume_spelling_out_the_defaults_goes_on(experiment, tiny_experiment, tmp_path, capsys):
    """End to end: a run stopped after one image, resumed with ``--box-threshold`` at the
    teacher's own value, every class named and the recorded cut given as a number."""
    from teacherkit.inference.label import label_images, partial_path
    from teacherkit.inference.label_thresholds import resolve_score_thresholds

    images = tmp_path / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, images, ignore=shutil.ignore_patterns("*.json"))
    out = tmp_path / "labels.json"

    def stop(done, total):
        raise KeyboardInterrupt

    thresholds = resolve_score_thresholds(experiment, None)
    with pytest.raises(KeyboardInterrupt):
        label_images(experiment, images, out, batch_size=1, workers=0, progress=stop, score_thresholds=thresholds)
    assert partial_path(out).exists()
    box = experiment.config.teacher(experiment.box_teacher_name("labelling"))
    flags = ["--box-threshold", repr(box.box_threshold), "--classes",
             ",".join(str(c["name"]) for c in experiment.info.categories)]
    if thresholds.default is not None:
        flags += ["--score-threshold", repr(thresholds.default)]
    code = run(["label", str(tiny_experiment["path"]), "--images", str(images), "--output", str(out), "--device",
                "cpu", "--quiet", "--resume", "--workers", "0", *flags])
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and not partial_path(out).exists()


class _Slow:
    """A picklable preprocessor that takes its time, so the main process is waiting for a
    batch when Ctrl-C comes."""

    def __call__(self, sample, *, train):
        time.sleep(0.5)
        return {"image_id": sample["image_id"]}


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_a_batch_stops_the_readers(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for k in range(8):
        Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)).save(images / f"img_{k}.png")
    batches = image_batches(sorted(images.iterdir()), set(), 1, workers=2, preprocessor=_Slow())
    timer = threading.Timer(1.2, os.kill, (os.getpid(), signal.SIGINT))  # mid-wait: readers sleep per image
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            for _batch in batches:
                pass
    finally:
        timer.cancel()
    assert caught.value is not None  # the traceback is still held, as after an interrupt in a notebook
    assert not multiprocessing.active_children()
