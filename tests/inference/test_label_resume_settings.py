"""``label --resume`` with settings other than the partial run's is refused, naming each
differing flag with its recorded and its new value; the settings file is part of the partial
run (a fresh run is refused while it exists, it goes with the shards after the merge); a
partial run from before settings were recorded resumes with a warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from teacherkit.cli import run
from teacherkit.errors import DataError, OutputExistsError
from teacherkit.inference.label import check_label_output, partial_path
from teacherkit.inference.label_settings import (
    SettingsChangedError,
    check_resumed_settings,
    differences,
    read_settings,
    settings_path,
    write_settings,
)

SETTINGS = {"experiment": "/runs/exp1", "teachers": ["grounding_dino", "sam"], "adapter_scale": 1.0,
            "classes": None, "score_thresholds": {"default": 0.3, "default_from": "--score-threshold",
                                                  "per_class": {}}}


def test_each_differing_setting_is_named_with_both_values():
    now = {**SETTINGS, "adapter_scale": 0.5, "classes": ["circle", "square"], "box_threshold": 0.4,
           "score_thresholds": {"default": 0.3, "default_from": "--score-threshold", "per_class": {"cat": 0.5}}}
    assert differences(SETTINGS, now) == [
        "--adapter-scale: recorded 1.0, now 0.5",
        "--classes: recorded all classes, now circle,square",
        "--score-threshold: recorded 0.3, now 0.3,cat=0.5",
        "--box-threshold: recorded not given, now 0.4",
    ]
    assert differences(SETTINGS, json.loads(json.dumps(SETTINGS))) == []


def test_a_resume_with_other_settings_is_refused_saying_how_to_go_on(tmp_path):
    out = tmp_path / "labels.json"
    write_settings(out, SETTINGS)
    partial_path(out).write_text("")
    assert read_settings(out) == SETTINGS
    check_resumed_settings(out, dict(SETTINGS), [partial_path(out), settings_path(out)])
    with pytest.raises(SettingsChangedError) as refused:
        check_resumed_settings(out, {**SETTINGS, "nms_iou": 0.3}, [partial_path(out), settings_path(out)])
    message = str(refused.value)
    assert "--nms: recorded not given, now 0.3" in message and "Resume with the recorded values" in message
    assert f"delete {settings_path(out)}, {partial_path(out)} to label from the start" in message


def test_a_partial_run_without_settings_resumes_with_a_warning(tmp_path, caplog):
    out = tmp_path / "labels.json"
    partial_path(out).write_text("")
    check_resumed_settings(out, SETTINGS, [partial_path(out)])
    assert "no record of its settings" in caplog.text
    caplog.clear()
    check_resumed_settings(out, SETTINGS, [])  # nothing to resume: nothing to say
    assert caplog.text == ""


def test_the_settings_file_alone_is_a_partial_run(tmp_path):
    out = tmp_path / "labels.json"
    write_settings(out, SETTINGS)
    with pytest.raises(OutputExistsError, match=r"partial-settings\.json holds a partial run; continue it with"):
        check_label_output(out, overwrite=False, resume=False)
    partial_path(out, 2).write_text("")
    with pytest.raises(OutputExistsError, match=r"partial-2\.jsonl holds a partial run.* other 1 file\(s\)"):
        check_label_output(out, overwrite=False, resume=False)
    check_label_output(out, overwrite=False, resume=True)


@pytest.mark.parametrize("text", ["{not json", "[1]", json.dumps(SETTINGS)])
def test_a_settings_file_that_is_not_one_is_refused_naming_it(tmp_path, text):
    out = tmp_path / "labels.json"
    settings_path(out).write_text(text)
    with pytest.raises(DataError, match=r"partial-settings\.json: not the settings file"):
        read_settings(out)


# -- on the tiny trained experiment ----------------------------------------------------


@pytest.fixture(scope="module")
def partial_run(tiny_experiment, tmp_path_factory):
    """A run stopped after its first image, with the settings of plain ``teacherkit label``."""
    from teacherkit.inference import load_experiment
    from teacherkit.inference.label import label_images
    from teacherkit.inference.label_thresholds import resolve_score_thresholds

    root = tmp_path_factory.mktemp("label-settings")
    images = root / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, images, ignore=shutil.ignore_patterns("*.json"))
    exp = load_experiment(tiny_experiment["path"], device="cpu")
    out = root / "partial" / "labels.json"

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        label_images(exp, images, out, batch_size=1, workers=0, progress=stop,
                     score_thresholds=resolve_score_thresholds(exp, None))
    assert read_settings(out) is not None and len(partial_path(out).read_text().splitlines()) == 1
    return {"images": images, "partial": out.parent, "experiment": tiny_experiment["path"]}


def _copy(partial_run, tmp_path) -> Path:
    folder = tmp_path / "out"
    shutil.copytree(partial_run["partial"], folder)
    return folder / "labels.json"


def _args(experiment, images, out, *extra):
    return ["label", str(experiment), "--images", str(images), "--output", str(out), "--device", "cpu",
            "--quiet", "--resume", *extra]


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "says"), [
    (["--score-threshold", "0.9"], "--score-threshold: recorded "),
    (["--classes", "square"], "--classes: recorded all classes, now square"),
    (["--adapter-scale", "0.5"], "--adapter-scale: recorded 1.0, now 0.5"),
    (["--box-threshold", "0.9"], "--box-threshold: recorded not given, now 0.9"),
    (["--text-threshold", "0.1"], "--text-threshold: recorded not given, now 0.1"),
    (["--nms", "0.3", "--classes", "circle"], "--classes: recorded all classes, now circle; --nms: recorded"),
])
def test_a_resume_with_another_flag_is_refused_and_the_run_left_as_it_was(partial_run, tmp_path, capsys,
                                                                          flags, says):
    out = _copy(partial_run, tmp_path)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert run(_args(partial_run["experiment"], partial_run["images"], out, *flags)) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and "delete" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before


@pytest.mark.slow
def test_a_resume_with_another_experiment_is_refused(partial_run, tmp_path, capsys):
    other = tmp_path / "exp-copy"
    shutil.copytree(partial_run["experiment"], other)
    out = _copy(partial_run, tmp_path)
    assert run(_args(other, partial_run["images"], out)) == 2
    err = capsys.readouterr().err
    assert f"EXPERIMENT (the experiment folder): recorded {Path(partial_run['experiment']).resolve()}, now " \
           f"{other.resolve()}" in err


@pytest.mark.slow
def test_a_resume_with_the_same_settings_finishes_and_removes_the_settings(partial_run, tmp_path, capsys):
    out = _copy(partial_run, tmp_path)
    # another batch size and number of workers do not change a label: allowed
    assert run(_args(partial_run["experiment"], partial_run["images"], out, "--batch-size", "2", "--workers", "0")) == 0
    assert len(json.loads(out.read_text())["images"]) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.json"]


@pytest.mark.slow
def test_a_partial_run_without_settings_resumes_and_says_it(partial_run, tmp_path, capsys):
    out = _copy(partial_run, tmp_path)
    settings_path(out).unlink()  # as an older teacherkit left it
    assert run(_args(partial_run["experiment"], partial_run["images"], out, "--score-threshold", "0.9")) == 0
    assert "no record of its settings" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.json"]
