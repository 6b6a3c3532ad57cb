"""Atomic writes: ordinary modes under the umask, nothing left behind on failure, and a
folder swap a crash interrupted is recovered."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from teacherkit.atomic import (
    atomic_dir,
    atomic_replace_dir,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    recover_dir,
)


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_files_and_folders_get_the_modes_of_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"k": 1})
    with atomic_dir(tmp_path / "adapter") as tmp:
        (tmp / "weights.bin").write_bytes(b"w")
        (tmp / "sub").mkdir()
    assert _mode(tmp_path / "a.txt") == file_mode
    assert _mode(tmp_path / "b.json") == file_mode
    assert _mode(tmp_path / "adapter") == dir_mode
    assert _mode(tmp_path / "adapter" / "weights.bin") == file_mode
    assert current_umask() == mask  # reading it did not change it


def test_atomic_dir_replaces_on_success_and_leaves_the_old_folder_on_failure(tmp_path):
    final = tmp_path / "best"
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("disk full")
    assert (final / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no temp folder left behind
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("3")
    assert (final / "v").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_failed_file_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "metadata.json"
    atomic_write_text(target, "old")

    def no_space(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]


def test_a_crash_between_the_two_renames_is_recovered(tmp_path):
    final = tmp_path / "last"
    with atomic_dir(final) as tmp:
        (tmp / "epoch").write_text("3")
    # the state a crash leaves after `last` -> `last.old` and before the new folder's rename
    os.replace(final, tmp_path / "last.old")
    stray = tmp_path / ".last.abc.tmp"
    stray.mkdir()
    assert recover_dir(final) is True
    assert (final / "epoch").read_text() == "3"
    assert not (tmp_path / "last.old").exists()
    assert recover_dir(final) is False  # nothing to do the second time


def test_replacing_after_a_crash_keeps_the_recovered_version_until_the_new_one_is_in(tmp_path):
    final = tmp_path / "last"
    with atomic_dir(final) as tmp:
        (tmp / "epoch").write_text("3")
    os.replace(final, tmp_path / "last.old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "epoch").write_text("4")
    atomic_replace_dir(new, final)
    assert (final / "epoch").read_text() == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
