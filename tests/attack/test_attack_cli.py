"""An attack table against the CLI: hostile inputs, each run in-process through
``teacherkit.cli.run``.

Every case must end with its documented exit code (2: bad input/flag/config or an output
that cannot be written; 1: validate found problems), say so on one ``error:`` line that
names the file or flag (or, for validate's findings, report the check code), print no
traceback, leave every input byte-identical and leave no new file behind (no partial
output). Nothing here trains: the table runs in a few seconds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from teacherkit.cli import run
from teacherkit.testing import make_coco_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class Attack:
    id: str
    build: Callable[[Path], list[str]]  # mutates the case folder, returns argv ({root} is the folder)
    exit_code: int
    says: str | None = None  # a substring of the error line; "{root}" is replaced by the folder
    finding: str | None = None  # validate --json must report this code
    patch: Callable[[Any], None] | None = None  # monkeypatch → simulate the OS failing a write


ATTACKS: list[Attack] = []


def attack(id: str, exit_code: int = 2, says: str | None = None, finding: str | None = None,
           patch: Callable[[Any], None] | None = None) -> Callable[[Callable[[Path], list[str]]], Any]:
    def register(build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        ATTACKS.append(Attack(id, build, exit_code, says, finding, patch))
        return build

    return register


def _data(root: Path) -> Path:
    return root / "data" / "annotations.json"


def _edit(root: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    path = _data(root)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _image(root: Path, index: int = 0) -> Path:
    data = json.loads(_data(root).read_text())
    return _data(root).parent / data["images"][index]["file_name"]


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _write(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.write_bytes(data)
    return path


def _refuse_writes(code: int, message: str) -> Callable[[Any], None]:
    """Make every atomic write fail as the OS would (ENOSPC, EACCES, EROFS)."""
    def patch(monkeypatch: Any) -> None:
        import teacherkit.atomic as atomic

        def refuse(path: Path, data: bytes) -> None:
            raise OSError(code, message, str(path))

        monkeypatch.setattr(atomic, "atomic_write_bytes", refuse)

    return patch


# -- bad COCO files ---------------------------------------------------------------------

_BAD_FILES = {
    "truncated": b'{"images": [{"id": 1, "file_na',
    "empty": b"",
    "garbage": bytes(range(256)) * 4,
    "top-level-array": b"[1, 2]",
    "deep-info": b'{"info": ' + b'{"a":' * 60_000 + b"1" + b"}" * 60_000 + b', "images": [], "categories": []}',
    "deep-images": b'{"images": ' + b"[" * 60_000 + b"]" * 60_000 + b"}",
    "nan-id": b'{"images": [{"id": NaN}], "categories": []}',
    "string-size": b'{"images": [{"id": 1, "file_name": "a.png", "width": "wide", "height": 1}], "categories": []}',
    "bom-only": b"\xef\xbb\xbf",
    "utf16": '{"images": [], "categories": []}'.encode("utf-16"),
}
for _name, _raw in _BAD_FILES.items():
    attack(f"inspect-{_name}", says="{root}/bad.json")(
        lambda root, raw=_raw: ["inspect", str(_write(root, "bad.json", raw))])


@attack("inspect-a-folder", says="{root}")
def _inspect_folder(root):
    return ["inspect", str(root / "data")]


@attack("inspect-duplicate-image-ids", says="duplicate image id")
def _dup_ids(root):
    return ["inspect", str(_edit(root, lambda d: d["images"][1].update(id=d["images"][0]["id"])))]


@attack("validate-deep-json", finding="json.too_deep")
def _validate_deep(root):
    return ["validate", str(_write(root, "deep.json", b'{"images": ' + b"[" * 60_000 + b"]" * 60_000 + b"}")), "--json"]


@attack("validate-images-folder-missing", says="{root}/nowhere")
def _no_images(root):
    return ["validate", str(_data(root)), "--images", str(root / "nowhere")]


# -- bad images ---------------------------------------------------------------------------

_IMAGE_ATTACKS = {
    "bomb-error": (lambda p: p.write_bytes(_png(20_000, 20_000)), "file.too_large"),
    "bomb-warning": (lambda p: p.write_bytes(_png(12_000, 8_000)), "file.too_large"),
    "zero-bytes": (lambda p: p.write_bytes(b""), "file.unreadable"),
    "text-as-png": (lambda p: p.write_text("hello"), "file.unreadable"),
    "header-cut": (lambda p: p.write_bytes(p.read_bytes()[:40]), "file.unreadable"),
    "tail-cut": (lambda p: p.write_bytes(p.read_bytes()[:-12]), "file.truncated"),
    "huge-claimed-size": (lambda p: p.write_bytes(_png(2**31 - 1, 1)), "file.too_large"),
}
for _name, (_spoil, _code) in _IMAGE_ATTACKS.items():
    attack(f"validate-image-{_name}", exit_code=1, finding=_code)(
        lambda root, spoil=_spoil: (spoil(_image(root, 1)), ["validate", str(_data(root)), "--json"])[1])


@attack("validate-image-is-a-folder", exit_code=1, finding="file.unreadable")
def _image_folder(root):
    path = _image(root, 0)
    path.unlink()
    path.mkdir()
    return ["validate", str(_data(root)), "--json"]


# -- path tricks ----------------------------------------------------------------------------

for _name, _file_name in {"dotdot": "../../secret.png", "absolute": "/etc/hostname", "windows-drive": "C:\\x.png",
                          "unc": "\\\\host\\share\\x.png", "nested-dotdot": "a/b/../../../x.png"}.items():
    attack(f"validate-path-{_name}", exit_code=1, finding="image.path_escapes")(
        lambda root, name=_file_name: ["validate", str(_edit(root, lambda d: d["images"][0].update(file_name=name))),
                                       "--json"])


# -- config abuse -----------------------------------------------------------------------------

for _name, _set in {"lr-inf": "training.lr=inf", "lr-nan": "training.lr=nan", "unknown-key": "nosuch.key=1",
                    "epochs-text": "training.epochs=many", "no-equals": "training.lr"}.items():
    attack(f"config-set-{_name}")(lambda root, s=_set: ["config", "--set", s])


@attack("config-file-is-a-folder", says="{root}")
def _config_folder(root):
    return ["config", "--config", str(root / "data")]


@attack("config-file-missing", says="{root}/none.yaml")
def _config_missing(root):
    return ["config", "--config", str(root / "none.yaml")]


@attack("config-file-not-a-mapping", says="{root}/list.yaml")
def _config_list(root):
    return ["config", "--config", str(_write(root, "list.yaml", b"- 1\n- 2\n"))]


# -- outputs that cannot be written ---------------------------------------------------------------

@attack("validate-fix-into-a-folder", says="--fix")
def _fix_folder(root):
    (root / "out").mkdir()
    return ["validate", str(_data(root)), "--fix", str(root / "out")]


@attack("validate-fix-parent-is-a-file", says="is a file, not a folder")
def _fix_parent_file(root):
    return ["validate", str(_data(root)), "--fix", str(_data(root) / "fixed.json")]


@attack("validate-fix-the-input", says="input")
def _fix_input(root):
    return ["validate", str(_data(root)), "--fix", str(_data(root))]


@attack("validate-fix-disk-full", says="no space left", patch=_refuse_writes(errno.ENOSPC, "No space left on device"))
def _fix_full(root):
    return ["validate", str(_data(root)), "--fix", str(root / "fixed.json")]


@attack("validate-fix-permission", says="permission denied", patch=_refuse_writes(errno.EACCES, "Permission denied"))
def _fix_denied(root):
    return ["validate", str(_data(root)), "--fix", str(root / "fixed.json")]


@attack("validate-split-disk-full", says="no space left", patch=_refuse_writes(errno.ENOSPC, "No space left"))
def _split_full(root):
    return ["validate", str(_data(root)), "--split", "train:0.5,val:0.5", "--out", str(root / "splits")]


def _second_write_fails(monkeypatch: Any) -> None:
    import teacherkit.atomic as atomic

    real, calls = atomic.atomic_write_bytes, []

    def second_fails(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", second_fails)


@attack("validate-split-disk-full-on-the-second", says="no space left", patch=_second_write_fails)
def _split_second_full(root):
    return ["validate", str(_data(root)), "--split", "train:0.5,val:0.5", "--out", str(root / "data")]


@attack("validate-split-out-is-a-file", says="is a file, not a folder")
def _split_out_file(root):
    return ["validate", str(_data(root)), "--split", "train:0.5,val:0.5", "--out", str(_data(root))]


def _label(root: Path, *extra: str) -> list[str]:
    return ["label", str(root / "exp"), "--images", str(root / "data"), "--output", str(root / "pseudo.json"), *extra]


for _flag, _value in (("--box-threshold", "5"), ("--box-threshold", "-1"), ("--text-threshold", "inf"),
                      ("--nms", "-1"), ("--nms", "0"), ("--nms", "1.5"), ("--batch-size", "0"),
                      ("--adapter-scale", "2")):
    attack(f"label-flag{_flag}={_value}", says=_flag)(lambda root, f=_flag, v=_value: _label(root, f, v))


@attack("label-output-is-a-folder", says="is a folder")
def _label_out_folder(root):
    return ["label", str(root / "exp"), "--images", str(root / "data"), "--output", str(root / "data")]


@attack("label-output-parent-is-a-file", says="is a file, not a folder")
def _label_parent_file(root):
    return ["label", str(root / "exp"), "--images", str(root / "data"), "--output", str(_data(root) / "x.json")]


@attack("label-not-an-experiment", says="{root}/data")
def _label_no_exp(root):
    return ["label", str(root / "data"), "--images", str(root / "data"), "--output", str(root / "p.json")]


@attack("export-output-is-a-file", says="is a file, expected a folder")
def _export_file(root):
    return ["export", str(root / "exp"), "--output", str(_data(root))]


@attack("export-not-an-experiment", says="not a teacherkit experiment")
def _export_no_exp(root):
    return ["export", str(root / "data"), "--output", str(root / "bundle")]


@attack("evaluate-data-missing", says="{root}/none.json")
def _evaluate_missing(root):
    return ["evaluate", str(root / "data"), "--data", str(root / "none.json")]


@attack("evaluate-data-is-a-folder", says="--data")
def _evaluate_folder(root):
    return ["evaluate", str(root / "data"), "--data", str(root / "data")]


@attack("train-truncated-data", says="{root}/bad.json")
def _train_truncated(root):
    return ["train", "--data", str(_write(root, "bad.json", b'{"images": [')), "--output", str(root / "run"),
            "--preset", "tiny"]


@attack("train-path-escapes", says="leaves the image folder")
def _train_escape(root):
    path = _edit(root, lambda d: d["images"][0].update(file_name="../../../etc/hostname"))
    return ["train", "--data", str(path), "--output", str(root / "run"), "--preset", "tiny"]


@attack("train-output-is-a-file", says="--output")
def _train_output_file(root):
    return ["train", "--data", str(_data(root)), "--output", str(_data(root)), "--preset", "tiny"]


@attack("train-lr-inf", says="training.lr")
def _train_lr_inf(root):
    return ["train", "--data", str(_data(root)), "--output", str(root / "run"), "--preset", "tiny",
            "--set", "training.lr=inf"]


# -- the harness ------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: its content hash (folders: "dir")."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attack-base")
    make_coco_dataset(root / "data", num_images=4, size=(32, 32), seed=5)
    return root


@pytest.mark.parametrize("case", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack(case: Attack, clean_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    root = tmp_path / "case"
    shutil.copytree(clean_dataset, root)
    argv = case.build(root)
    before = _snapshot(root)
    if case.patch:
        case.patch(monkeypatch)
    code = run(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code == case.exit_code, (code, captured.err[-500:])
    assert _snapshot(root) == before, "an input changed or a (partial) output was left behind"
    if case.finding:
        report = json.loads(captured.out)["report"]
        assert case.finding in {g["code"] for g in report["checks"]}, report["checks"]
        return
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and all(line.startswith(("error:", "warning:")) for line in lines), lines
    if case.says:
        assert case.says.replace("{root}", str(root)) in errors[0], errors[0]


def test_every_class_of_the_issue_is_attacked() -> None:
    prefixes = {a.id.split("-")[0] for a in ATTACKS}
    assert {"inspect", "validate", "config", "label", "export", "evaluate"} <= prefixes
    assert len(ATTACKS) >= 50
