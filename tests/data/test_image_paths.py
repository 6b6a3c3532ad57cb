"""Image paths that leave their folder, decompression bombs and too-deep JSON (issue 16)."""

from __future__ import annotations

import json
import shutil

import pytest
from coco_failure_cases import png_header

from teacherkit.cli import run
from teacherkit.data.coco import load_coco
from teacherkit.data.image_files import (
    ALLOW_OUTSIDE_IMAGES_ENV,
    check_image_paths,
    resolve_image_path,
)
from teacherkit.errors import DataError
from teacherkit.testing import make_coco_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("name", ["../secret.png", "a/../../secret.png", "/etc/passwd", "C:\\x.png",
                                  "\\\\server\\share\\x.png", "..\\x.png"])
def test_resolve_image_path_refuses_names_leaving_the_folder(tmp_path, name, monkeypatch):
    monkeypatch.delenv(ALLOW_OUTSIDE_IMAGES_ENV, raising=False)
    with pytest.raises(DataError, match="leaves the image folder") as info:
        resolve_image_path(tmp_path, name, image_id=7)
    assert "image 7" in str(info.value) and repr(name) in str(info.value)
    assert "--allow-outside-images" in str(info.value)
    assert resolve_image_path(tmp_path, name, allow_outside=True) == tmp_path / name
    monkeypatch.setenv(ALLOW_OUTSIDE_IMAGES_ENV, "1")
    assert resolve_image_path(tmp_path, name, image_id=7) == tmp_path / name


@pytest.mark.parametrize("name", ["a.png", "sub/a.png", "a..b.png", "x/..y/a.png"])
def test_resolve_image_path_keeps_ordinary_names(tmp_path, name):
    assert resolve_image_path(tmp_path, name) == tmp_path / name


def test_check_image_paths_names_the_first_and_counts(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_OUTSIDE_IMAGES_ENV, raising=False)
    path = make_coco_dataset(tmp_path / "d", num_images=3, size=(32, 32), seed=1)
    data = json.loads(path.read_text())
    for image in data["images"][1:]:
        image["file_name"] = "../" + image["file_name"]
    path.write_text(json.dumps(data))
    coco = load_coco(path)
    with pytest.raises(DataError, match=r"of image 2 \(and 1 more\)"):
        check_image_paths(coco.images, path.parent, source=path)


def test_validate_reads_an_outside_file_only_with_the_flag(tmp_path, capsys):
    root = tmp_path / "d"
    path = make_coco_dataset(root, num_images=3, size=(32, 32), seed=1)
    data = json.loads(path.read_text())
    outside = tmp_path / "outside.png"
    shutil.move(root / data["images"][0]["file_name"], outside)
    data["images"][0]["file_name"] = "../outside.png"
    path.write_text(json.dumps(data))
    assert run(["validate", str(path), "--json"]) == 1
    codes = {g["code"] for g in json.loads(capsys.readouterr().out)["report"]["checks"]}
    assert "image.path_escapes" in codes
    assert run(["--allow-outside-images", "validate", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["report"]
    assert report["images_checked"] == 3 and report["errors"] == 0
    # the flag lasts for one invocation only
    assert run(["validate", str(path), "--json"]) == 1
    capsys.readouterr()


def test_validate_images_reports_a_bomb_and_goes_on(tmp_path, capsys):
    root = tmp_path / "d"
    path = make_coco_dataset(root, num_images=3, size=(32, 32), seed=1)
    data = json.loads(path.read_text())
    (root / data["images"][0]["file_name"]).write_bytes(png_header(20_000, 20_000))
    (root / data["images"][1]["file_name"]).write_text("not an image")
    assert run(["validate", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    checks = {g["code"]: g for g in json.loads(captured.out)["report"]["checks"]}
    assert checks["file.too_large"]["findings"][0]["location"]["image_id"] == data["images"][0]["id"]
    assert "file.unreadable" in checks  # the images after the bomb were still checked
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                 b'{"images": [], "categories": [], "info": ' + b'{"a":' * 50_000 + b"1"
                                 + b"}" * 50_000 + b"}"])
def test_deep_json_is_a_clear_error_naming_the_file(tmp_path, capsys, raw):
    path = tmp_path / "deep.json"
    path.write_bytes(raw)
    with pytest.raises(DataError) as info:  # typed fields refuse a wrong shape before any depth is reached
        load_coco(path)
    assert str(path) in str(info.value)
    if b'"info"' in raw:  # an untyped field is decoded as deep as it goes: RecursionError before the fix
        assert "nested too deeply" in str(info.value)
    for command in (["inspect", str(path)], ["validate", str(path)]):
        assert run(command) == 2
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and "RecursionError" not in captured.out + captured.err
        assert str(path) in captured.out + captured.err
    assert run(["validate", str(path), "--json"]) == 2
    codes = [g["code"] for g in json.loads(capsys.readouterr().out)["report"]["checks"]]
    assert codes == ["json.too_deep"]
