"""The Python API keeps its teachers: ``load_experiment(...).predict`` loads them on the
first call and reuses them after, takes one image or several, and prints nothing of the
libraries' own; bench/predict_reuse.py measures the saving (its lines checked, not its times)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from teacherkit.inference import load_experiment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


class CountingHost:
    """The real plugin host, counting the models it builds."""

    def __init__(self, host):
        self._host, self.loads = host, []

    def load_model(self, spec, *args, **kwargs):
        self.loads.append(spec.name)
        return self._host.load_model(spec, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._host, name)


def _without_image_id(detections):
    return [{k: v for k, v in d.items() if k != "image_id"} for d in detections]


def test_predict_loads_the_teachers_once_and_prints_nothing(tiny_experiment, capfd):
    from teacherkit.plugins import get_plugin_manager

    host = CountingHost(get_plugin_manager())
    exp = load_experiment(tiny_experiment["path"], host=host, device="cpu")
    folder = tiny_experiment["test"].parent
    images = [folder / "img_0000.png", folder / "img_0001.png"]
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = exp.predict(images)
        assert sorted(host.loads) == ["grounding_dino", "sam"]
        second = exp.predict(images)
    assert len(host.loads) == 2  # the second call built no model
    assert second == first
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "no progress bars or library warnings on any call"
    assert not caught

    one = exp.predict(str(images[1]))  # one path in: its detections out (image_id: the position, 0)
    assert _without_image_id(one) == _without_image_id(first[1]) and {d["image_id"] for d in one} <= {0}
    pixels = np.asarray(Image.open(images[0]).convert("RGB"))
    assert exp.predict(pixels) == first[0]
    assert len(host.loads) == 2


def test_another_adapter_scale_reloads_and_unload_forgets(tiny_experiment):
    from teacherkit.plugins import get_plugin_manager

    host = CountingHost(get_plugin_manager())
    exp = load_experiment(tiny_experiment["path"], host=host, device="cpu")
    image = tiny_experiment["test"].parent / "img_0002.png"
    base = exp.predict(image, adapter_scale=0.0)
    assert exp.predict(image, adapter_scale=0.0) == base and len(host.loads) == 2
    exp.predict(image)  # scale 1: a different model, built once per teacher
    assert len(host.loads) == 4
    exp.unload()
    exp.predict(image)
    assert len(host.loads) == 6


def test_quiet_false_keeps_the_library_output(tiny_experiment, capfd):
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    # the libraries' own defaults, whatever an earlier in-process CLI run of this worker left
    hub_utils.enable_progress_bars()
    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity_warning()
    exp = load_experiment(tiny_experiment["path"], device="cpu", quiet=False)
    capfd.readouterr()
    exp.predict(tiny_experiment["test"].parent / "img_0000.png")
    assert "Loading weights" in capfd.readouterr().err  # transformers' bar, which quiet mode hides


def _bench(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "predict_reuse.py"), *args, "--images", "1",
                           "--device", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 5 and lines[1] == "images per call: 1"
    assert lines[2].startswith("first call (loads the teachers): ") and lines[2].endswith(" s")
    assert lines[3].startswith("second call (reuses them): ") and lines[3].endswith(" s")
    assert lines[4].startswith("ratio first/second: ") and lines[4].endswith("x")
    first, second = (float(line.split(": ")[1].split()[0]) for line in lines[2:4])
    assert first > 0 and second > 0  # numbers; no comparison of times
    return lines


def test_the_bench_measures_an_experiment_folder(tiny_experiment):
    lines = _bench(str(tiny_experiment["path"]))
    assert lines[0] == f"experiment: {tiny_experiment['path']}"


def test_the_bench_trains_its_own_experiment_on_the_shipped_pair(tmp_path):
    lines = _bench("--train-images", "4", "--workdir", str(tmp_path))
    assert lines[0] == f"experiment: {tmp_path / 'exp'} (1 epoch on domain B from examples/pretrained)"
    assert (tmp_path / "exp" / "teachers" / "grounding_dino" / "adapter").is_dir()
