"""Every failure fixture yields its code at the right place through the real CLI, and
--fix repairs what it claims to."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from coco_failure_cases import ANY, CASES, Case

from teacherkit.cli import run
from teacherkit.data.findings import CHECKS
from teacherkit.data.fix import fix_coco
from teacherkit.data.validate import validate_coco
from teacherkit.testing import make_coco_dataset

# pycocotools calls numpy with a keyword numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    make_coco_dataset(root, num_images=6, mask_format="mixed", seed=3)
    return root


def materialise(base: Path, tmp_path: Path, case: Case):
    root = tmp_path / "data"
    shutil.copytree(base, root)
    data = json.loads((root / "annotations.json").read_text())
    expect = case.mutate(data, root)
    path = root / "annotations.json"
    path.write_bytes(expect.raw if expect.raw is not None else json.dumps(data).encode())
    return path, expect


def test_base_dataset_is_clean(base: Path) -> None:
    report = validate_coco(base / "annotations.json")
    assert report.findings == []
    assert report.images_checked == 6


def test_catalogue_has_forty_error_modes_each_with_a_fixture() -> None:
    covered = {c.code for c in CASES}
    assert covered == set(CHECKS), f"fixtures missing for {set(CHECKS) - covered}"
    errors = [c for c in CHECKS.values() if c.severity == "error"]
    assert len(errors) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failure_fixture(case: Case, base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, expect = materialise(base, tmp_path, case)
    code = run(["validate", str(path), "--json", *expect.args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    result = json.loads(captured.out)
    check = CHECKS[case.code]
    expected_exit = 2 if check.fatal else (1 if check.severity == "error" else None)
    if expected_exit is not None:
        assert code == expected_exit
    assert code == result["exit_code"]
    findings = [f for group in result["report"]["checks"] if group["code"] == case.code for f in group["findings"]]
    assert findings, f"{case.code} not reported; got {[g['code'] for g in result['report']['checks']]}"
    located = [f for f in findings if f["location"]["json_path"] == expect.json_path
               and (expect.image_id is ANY or f["location"]["image_id"] == expect.image_id)
               and (expect.annotation_id is ANY or f["location"]["annotation_id"] == expect.annotation_id)]
    assert located, f"{case.code} reported at {[f['location'] for f in findings]}, expected {expect}"
    if expect.message:
        assert expect.message in located[0]["message"]
    assert located[0]["severity"] == check.severity


FIXABLE = [c for c in CASES if CHECKS[c.code].fixable and c.code not in ("json.bom", "json.encoding")]


@pytest.mark.parametrize("case", FIXABLE, ids=[c.id for c in FIXABLE])
def test_fix_repairs_the_fixture(case: Case, base: Path, tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    path, expect = materialise(base, tmp_path, case)
    before = path.read_bytes()
    fixed, repairs = fix_coco(path)
    assert path.read_bytes() == before, "the input must never change"
    assert any(r.code == case.code and r.location.json_path == expect.json_path for r in repairs), repairs
    after = validate_coco(fixed, check_images=False)
    assert not [f for f in after.findings if f.fixable], [f.to_dict() for f in after.findings]
    assert case.code not in after.codes() or case.code == "annotation.missing_field"
    out = tmp_path / "fixed.json"
    out.write_text(json.dumps(fixed))
    coco = COCO(str(out))  # loads in pycocotools...
    for ann in coco.dataset["annotations"]:
        if "segmentation" in ann:
            coco.annToMask(ann)  # ...and every mask decodes


@pytest.mark.parametrize("encoding_case", ["json.bom", "json.encoding"])
def test_fix_rewrites_bytes_as_plain_utf8(encoding_case: str, base: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    case = next(c for c in CASES if c.id == encoding_case)
    path, _expect = materialise(base, tmp_path, case)
    out = tmp_path / "fixed.json"
    code = run(["validate", str(path), "--fix", str(out), "--images", str(path.parent)])
    text = capsys.readouterr().out
    assert encoding_case in text and "repair" in text
    assert code == 0
    assert not out.read_bytes().startswith(b"\xef\xbb\xbf")
    json.loads(out.read_bytes().decode("utf-8"))
    assert validate_coco(out, images_dir=path.parent).ok


def test_fix_cli_lists_repairs_and_leaves_input(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "d"
    shutil.copytree(base, root)
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    del data["annotations"][0]["bbox"]
    data["annotations"][1]["id"] = data["annotations"][2]["id"]
    path.write_text(json.dumps(data))
    original = path.read_bytes()
    out = root / "fixed.json"
    assert run(["validate", str(path), "--fix", str(out)]) == 0  # exit reflects the repaired data
    text = capsys.readouterr().out
    assert "bbox.missing" in text and "bbox set from the mask" in text and "annotation.duplicate_id" in text
    assert path.read_bytes() == original
    assert validate_coco(out).findings == []
    # an existing output is kept without --force, replaced with it
    assert run(["validate", str(path), "--fix", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert run(["validate", str(path), "--fix", str(out), "--force"]) == 0
    # the input is never a target, even with --force
    assert run(["validate", str(path), "--fix", str(path), "--force"]) == 2
    assert path.read_bytes() == original


def test_dict_input_is_not_modified(base: Path) -> None:
    data = json.loads((base / "annotations.json").read_text())
    data["annotations"][0]["bbox"] = [500, 500, 3, 3]
    snapshot = copy.deepcopy(data)
    fixed, repairs = fix_coco(data)
    assert data == snapshot
    assert repairs and fixed["annotations"][0]["bbox"] != [500, 500, 3, 3]


def test_unreadable_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["validate", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err
    good = make_coco_dataset(tmp_path / "d", num_images=2)
    for bad in (["--split", "train:0.7,val:0.7"], ["--split", "train0.5"], ["--split", "a:0.5,a:0.5"],
                ["--images", str(tmp_path / "missing")]):
        assert run(["validate", str(good), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err


@pytest.mark.slow
def test_subprocess_shows_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"images": [}')
    done = subprocess.run([sys.executable, "-m", "teacherkit.cli", "validate", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "json.syntax" in done.stdout and "byte 12" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    path = make_coco_dataset(tmp_path / "d", num_images=2)
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = "x"
    path.write_text(json.dumps(data))
    done = subprocess.run([sys.executable, "-m", "teacherkit.cli", "validate", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "bbox.bad_type" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_a_mapped_file_gives_the_findings_of_its_bytes(base: Path, tmp_path: Path, monkeypatch) -> None:
    """Large files are decoded from a read-only map (teacherkit.data.jsonbytes.read_buffer);
    every failure fixture, mapped, reports what it reports read into memory."""
    import mmap

    from teacherkit.data import jsonbytes

    mapped: list[bool] = []
    real = jsonbytes.read_buffer

    def spy(path):
        buffer = real(path)
        mapped.append(isinstance(buffer, mmap.mmap))
        return buffer

    monkeypatch.setattr("teacherkit.data.validate.read_buffer", spy)
    for case in CASES:
        path, _ = materialise(base, tmp_path / case.id, case)
        if path.stat().st_size == 0:
            continue
        monkeypatch.setattr(jsonbytes, "MAP_AT_LEAST", 1 << 40)
        in_memory = validate_coco(path).findings
        monkeypatch.setattr(jsonbytes, "MAP_AT_LEAST", 0)
        assert validate_coco(path).findings == in_memory, case.id
    assert mapped.count(True) == mapped.count(False) > 40  # both ways really ran
