"""The shard files of ``label`` without a model: names per rank, which process cuts which torn
tail on resume, what every process counts as done, and reading records back one at a time."""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest

from teacherkit.errors import DataError, OutputExistsError
from teacherkit.inference.label import check_label_output
from teacherkit.inference.label_dist import Ranks, ranks_from_env
from teacherkit.inference.label_partial import (
    ShardReader,
    cut_torn_tails,
    done_names,
    open_shards,
    partial_path,
    shard_paths,
)


def _record(name: str, width: int = 8) -> str:
    return json.dumps({"file_name": name, "width": width, "height": 8, "detections": []}) + "\n"


def test_shards_are_named_by_rank_and_listed_in_rank_order(tmp_path):
    out = tmp_path / "labels.json"
    assert partial_path(out) == tmp_path / "labels.json.partial.jsonl"
    assert partial_path(out, 3) == tmp_path / "labels.json.partial-3.jsonl"
    for rank in (10, 2, 0):
        partial_path(out, rank).write_text("")
    (tmp_path / "labels.json.partial-x.jsonl").write_text("")  # not a shard
    (tmp_path / "other.json.partial-1.jsonl").write_text("")  # another output's
    assert shard_paths(out) == [partial_path(out), partial_path(out, 2), partial_path(out, 10)]


def test_each_process_cuts_its_own_torn_tail_and_rank_0_those_of_gone_ranks(tmp_path, caplog):
    out = tmp_path / "labels.json"
    torn = '{"file_name": "z.png", "wid'
    for rank in (0, 1, 2):  # the first run had 3 processes; the resumed one has 2
        partial_path(out, rank).write_text(_record(f"r{rank}.png") + torn)
    cut_torn_tails(out, rank=1, world=2)
    assert [p.read_text().endswith(torn) for p in shard_paths(out)] == [True, False, True]
    cut_torn_tails(out, rank=0, world=2)
    assert [p.read_text() for p in shard_paths(out)] == [_record(f"r{r}.png") for r in (0, 1, 2)]
    assert "cut by a crash" in caplog.text
    assert done_names(out) == {"r0.png", "r1.png", "r2.png"}


def test_records_are_read_back_one_at_a_time_from_any_shard(tmp_path):
    out = tmp_path / "labels.json"
    partial_path(out).write_text(_record("a.png", 1) + _record("c.png", 3))
    partial_path(out, 1).write_text(_record("b.png", 2) + json.dumps({"file_name": "d.png", "error": "bad"}) + "\n")
    with ExitStack() as files:
        reader = ShardReader(out, files)
        assert [reader.get(n)["width"] for n in ("c.png", "b.png", "a.png")] == [3, 2, 1]
        assert reader.get("d.png")["error"] == "bad" and reader.get("e.png") is None


def test_a_torn_shard_at_merge_time_is_refused_naming_it(tmp_path):
    out = tmp_path / "labels.json"
    partial_path(out, 1).write_text(_record("a.png") + "{")
    with pytest.raises(DataError, match=r"partial-1\.jsonl: line 2 .*--resume"), open_shards(out, {"a.png"}):
        pass


def test_a_shard_of_any_rank_needs_resume(tmp_path):
    out = tmp_path / "labels.json"
    partial_path(out, 1).write_text(_record("a.png"))
    with pytest.raises(OutputExistsError, match="partial-1.jsonl holds a partial run; continue it with --resume"):
        check_label_output(out, overwrite=False, resume=False)
    check_label_output(out, overwrite=False, resume=True)


def test_ranks_come_from_the_launcher_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert ranks_from_env() == Ranks(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ranks = ranks_from_env()
    assert ranks == Ranks(3, 4, 1) and not ranks.main
    assert [i for i in range(10) if ranks.owns(i)] == [3, 7]
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(Exception, match="RANK=4 with WORLD_SIZE=4"):
        ranks_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(Exception, match="WORLD_SIZE='two'"):
        ranks_from_env()
