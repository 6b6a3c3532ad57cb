"""label / export / evaluate under attack (issue 16): torn partial files, decompression bombs,
links out of the image folder, bad flags, outputs that cannot be written, undefined stats."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from teacherkit.cli import run
from teacherkit.inference.label import partial_path, read_partial

PNG_BOMB_SIDE = 20_000  # 400 Mpx: over twice Pillow's limit, a DecompressionBombError


def _png_header(side: int) -> bytes:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from coco_failure_cases import png_header

    return png_header(side, side)


# -- the partial file, without a model ------------------------------------------------


def _record(name: str) -> str:
    return json.dumps({"file_name": name, "width": 8, "height": 8, "detections": []}) + "\n"


def test_read_partial_stops_at_a_torn_last_line_and_says_where(tmp_path):
    path = tmp_path / "out.json.partial.jsonl"
    good = _record("a.png") + _record("b.png")
    path.write_text(good + '{"file_name": "c.png", "wid')
    state = read_partial(path)
    assert list(state.records) == ["a.png", "b.png"]
    assert state.good_bytes == len(good.encode()) and state.bad_line == 3 and state.dropped_lines == 1


@pytest.mark.parametrize("bad", ["not json", '{"file_name": 3}', '["a.png"]', "[" * 100_000,
                                 '{"file_name": "x.png", "width": 8}'])
def test_read_partial_never_passes_over_a_bad_middle_line(tmp_path, bad):
    path = tmp_path / "out.json.partial.jsonl"
    path.write_text(_record("a.png") + bad + "\n" + _record("b.png"))
    state = read_partial(path)
    assert list(state.records) == ["a.png"]  # b.png is after the bad line: labelled again, not trusted
    assert state.bad_line == 2 and state.dropped_lines == 2


def test_read_partial_of_a_complete_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_record("a.png") + json.dumps({"file_name": "b.png", "error": "unreadable"}) + "\n")
    state = read_partial(path)
    assert set(state.records) == {"a.png", "b.png"} and state.bad_line is None
    assert state.good_bytes == path.stat().st_size


@pytest.mark.parametrize(("flag", "value"), [("--box-threshold", "5"), ("--box-threshold", "-0.1"),
                                             ("--text-threshold", "1.5"), ("--nms", "-1"), ("--nms", "0"),
                                             ("--box-threshold", "nan")])
def test_label_refuses_out_of_range_flags_before_anything(tmp_path, capsys, flag, value):
    # the experiment does not even exist: the flag is refused first
    assert run(["label", str(tmp_path / "none"), "--images", str(tmp_path), "--output", str(tmp_path / "o.json"),
                flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err


# -- on a trained experiment ------------------------------------------------------------


@pytest.fixture
def images(tiny_experiment, tmp_path):
    folder = tmp_path / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, folder, ignore=shutil.ignore_patterns("*.json"))
    return folder


@pytest.mark.slow
def test_resume_after_a_torn_line_labels_every_image(tiny_experiment, images, tmp_path, caplog):
    from teacherkit.inference import load_experiment
    from teacherkit.inference.label import label_images

    exp = load_experiment(tiny_experiment["path"], device="cpu")
    straight = tmp_path / "straight.json"
    label_images(exp, images, straight, batch_size=1)

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done >= 2:
            raise Stop

    out = tmp_path / "resumed.json"
    with pytest.raises(Stop):
        label_images(exp, images, out, batch_size=1, progress=stop_after_two)
    partial = partial_path(out)
    lines = partial.read_text().splitlines(keepends=True)
    # a crash cut the second record in half: before the fix, resume appended after it and
    # the reader stopped there, so the images after it vanished from the output
    partial.write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    report = label_images(exp, images, out, batch_size=1, resume=True)
    assert report.resumed_from == 1 and report.labelled == 3
    assert "cut by a crash" in caplog.text
    assert json.loads(out.read_text()) == json.loads(straight.read_text())
    assert not partial.exists()


@pytest.mark.slow
def test_label_accounts_for_bombs_and_links_out_of_the_folder(tiny_experiment, images, tmp_path, capsys):
    (images / "bomb.png").write_bytes(_png_header(PNG_BOMB_SIDE))
    secret = tmp_path / "secret.png"
    shutil.copy(images / "img_0000.png", secret)
    (images / "link.png").symlink_to(secret)
    out = tmp_path / "pseudo.json"
    args = ["label", str(tiny_experiment["path"]), "--images", str(images), "--output", str(out), "--device", "cpu"]
    assert run(args) == 0
    err = capsys.readouterr().err
    assert "skipped bomb.png" in err and "skipped link.png" in err and "Traceback" not in err
    info = json.loads(out.read_text())["info"]
    failed = {f["file_name"]: f["reason"] for f in info["images_failed"]}
    assert set(failed) == {"bomb.png", "link.png"}
    assert "too many pixels" in failed["bomb.png"] and "--allow-outside-images" in failed["link.png"]
    labelled = {i["file_name"] for i in json.loads(out.read_text())["images"]}
    assert info["images_total"] == len(labelled) + len(failed) == 5
    # the explicit flag lets the link be read
    assert run(["--allow-outside-images", *args, "--overwrite"]) == 0
    capsys.readouterr()
    assert "link.png" in {i["file_name"] for i in json.loads(out.read_text())["images"]}


@pytest.mark.slow
def test_resume_goes_on_past_a_bomb_recorded_earlier(tiny_experiment, images, tmp_path):
    from teacherkit.inference import load_experiment
    from teacherkit.inference.label import label_images

    (images / "a_bomb.png").write_bytes(_png_header(PNG_BOMB_SIDE))  # sorts first: in the part done before the stop
    exp = load_experiment(tiny_experiment["path"], device="cpu")
    out = tmp_path / "out.json"

    def stop(done, total):
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        label_images(exp, images, out, batch_size=1, progress=stop)
    report = label_images(exp, images, out, batch_size=1, resume=True)
    assert report.labelled == 3 and [name for name, _ in report.skipped] == ["a_bomb.png"]


@pytest.mark.slow
def test_a_full_disk_at_the_end_keeps_the_partial_file_for_resume(tiny_experiment, images, tmp_path, capsys,
                                                                     monkeypatch):
    import teacherkit.inference.label_coco as label_coco

    def full(source, target, *args):
        raise OSError(errno.ENOSPC, "No space left on device", "out.json")

    out = tmp_path / "out.json"
    args = ["label", str(tiny_experiment["path"]), "--images", str(images), "--output", str(out), "--device", "cpu"]
    with monkeypatch.context() as patch:
        patch.setattr(label_coco.shutil, "copyfileobj", full)  # the streamed write, half-way through
        assert run(args) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # the half-written file is gone
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0] and "--resume" in errors[0] and "Traceback" not in err
    assert not out.exists() and partial_path(out).exists()
    assert run([*args, "--resume"]) == 0
    assert len(json.loads(out.read_text())["images"]) == 3 and not partial_path(out).exists()


@pytest.mark.slow
def test_export_names_the_teachers_and_leaves_nothing_on_failure(tiny_experiment, tmp_path, capsys, monkeypatch):
    import teacherkit.inference.export as export

    exp = str(tiny_experiment["path"])
    assert run(["export", exp, "--output", str(tmp_path / "e"), "--models", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "grounding_dino" in err and "sam" in err and "FileNotFoundError" not in err
    assert not (tmp_path / "e").exists()

    def full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(export.shutil, "copy2", full)
    out = tmp_path / "nested" / "bundle"
    assert run(["export", exp, "--output", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0]
    assert not (tmp_path / "nested").exists()  # neither the output nor the parent it would have made


@pytest.mark.slow
def test_evaluate_shows_undefined_size_stats_as_a_dash(tiny_experiment, capsys):
    # the tiny test images are 64x64: no object is large, so APl/ARl are undefined
    exp, test = tiny_experiment["path"], tiny_experiment["test"]
    args = ["evaluate", str(exp), "--data", str(test), "--device", "cpu", "--models", "grounding_dino"]
    assert run([*args, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["teachers"]["grounding_dino"]["data"]["tuned"]
    assert metrics["bbox_APl"] is None and metrics["bbox_ARl"] is None and metrics["bbox_AP"] is not None
    assert run(args) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "bbox_APl" in line)
    assert "\u2013" in row and "0.0000" not in row


@pytest.mark.slow
def test_evaluate_refuses_file_names_leaving_the_image_folder(tiny_experiment, tmp_path, capsys):
    exp, test = tiny_experiment["path"], tiny_experiment["test"]
    data = json.loads(test.read_text())
    data["images"][0]["file_name"] = "../" + data["images"][0]["file_name"]
    (tmp_path / "imgs").mkdir()
    path = tmp_path / "imgs" / "escape.json"
    path.write_text(json.dumps(data))
    assert run(["evaluate", str(exp), "--data", str(path), "--images", str(test.parent), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "leaves the image folder" in err and "image 1" in err and "--allow-outside-images" in err
