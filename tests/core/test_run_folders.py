"""``next_run_dir``: runs/<command>/exp, exp2, ... never an existing folder, and two
commands started together never share one."""

from __future__ import annotations

import threading

import pytest

from teacherkit.run_folders import next_run_dir, run_dir_name


def test_numbers_count_up_from_exp_per_command(tmp_path):
    root = tmp_path / "runs"
    assert next_run_dir("train", root) == root / "train" / "exp"
    assert next_run_dir("train", root) == root / "train" / "exp2"
    assert next_run_dir("evaluate", root) == root / "evaluate" / "exp"
    assert next_run_dir("train", root) == root / "train" / "exp3"
    assert all(p.is_dir() and not list(p.iterdir()) for p in (root / "train").iterdir())


def test_the_default_root_is_runs_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = next_run_dir("label")
    assert path.as_posix() == "runs/label/exp" and (tmp_path / "runs" / "label" / "exp").is_dir()


def test_an_existing_folder_or_file_is_never_reused_and_nothing_in_it_is_touched(tmp_path):
    parent = tmp_path / "train"
    (parent / "exp").mkdir(parents=True)
    (parent / "exp" / "metadata.json").write_text("{}")
    (parent / "exp7").write_text("a file, not a run")  # a name in the way counts as taken
    (parent / "experiment").mkdir()  # not one of ours: ignored
    (parent / "exp_old").mkdir()
    assert next_run_dir("train", tmp_path) == parent / "exp8"
    assert (parent / "exp" / "metadata.json").read_text() == "{}"
    assert (parent / "exp7").read_text() == "a file, not a run"


def test_a_gap_is_not_filled_so_the_newest_run_has_the_highest_number(tmp_path):
    for name in ("exp", "exp3"):
        (tmp_path / "train" / name).mkdir(parents=True)
    assert next_run_dir("train", tmp_path).name == "exp4"


def test_commands_started_together_each_get_their_own_folder(tmp_path):
    count = 16
    start = threading.Barrier(count)
    got: list = []

    def one_command() -> None:
        start.wait()  # every thread lists the folder before any of them creates one
        got.append(next_run_dir("train", tmp_path))

    threads = [threading.Thread(target=one_command) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in got) == sorted(run_dir_name(n) for n in range(1, count + 1))


def test_a_folder_taken_after_the_listing_moves_on_to_the_next_number(tmp_path, monkeypatch):
    from pathlib import Path

    real_mkdir = Path.mkdir
    raced = tmp_path / "train" / "exp"

    def mkdir_after_another_process(self, *args, **kwargs):
        if self == raced and not raced.exists():
            real_mkdir(raced)  # the other command wins the race for "exp"
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_after_another_process)
    assert next_run_dir("train", tmp_path) == tmp_path / "train" / "exp2"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../train"])
def test_a_command_that_is_not_a_plain_name_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="a plain name is needed"):
        next_run_dir(bad, tmp_path)
    assert not list(tmp_path.iterdir())


def test_run_dir_names():
    assert [run_dir_name(n) for n in (1, 2, 10)] == ["exp", "exp2", "exp10"]


def test_output_or_run_dir_keeps_a_given_output_and_makes_nothing(tmp_path):
    from teacherkit.run_folders import output_or_run_dir

    with output_or_run_dir(tmp_path / "mine", "train", root=tmp_path / "runs") as out:
        assert out == tmp_path / "mine"
    assert not (tmp_path / "runs").exists() and not out.exists()


def test_output_or_run_dir_removes_a_new_folder_left_empty_and_keeps_a_written_one(tmp_path):
    from teacherkit.run_folders import output_or_run_dir

    root = tmp_path / "runs"
    with pytest.raises(RuntimeError), output_or_run_dir(None, "label", file_name="labels.json", root=root) as out:
        assert out == root / "label" / "exp" / "labels.json" and out.parent.is_dir()
        raise RuntimeError("refused before writing")
    assert not (root / "label" / "exp").exists()
    with output_or_run_dir(None, "label", file_name="labels.json", root=root) as out:
        out.write_text("{}")
    assert out == root / "label" / "exp" / "labels.json" and out.is_file()


def test_output_or_run_dir_needs_an_output_under_several_processes(tmp_path, monkeypatch):
    from teacherkit.errors import TeacherkitError
    from teacherkit.run_folders import output_or_run_dir

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TeacherkitError, match="--output is needed"), output_or_run_dir(None, "train", root=tmp_path):
        pass
    assert not (tmp_path / "train").exists()
