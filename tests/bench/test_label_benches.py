"""bench/label_memory.py and bench/label_throughput.py at small sizes on the CPU (CI smoke):
they label real images with a real tiny experiment, write the JSON their renderers read, and
pass `--workers` to `teacherkit label` only when it lists the option.

A bench's ``main`` runs in the test's process (each labelling run is still a fresh command, as
the bench makes it): a bench process of its own would only import torch, transformers and peft
again to record their versions. That each script starts as a command is checked with
``--help``."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def memory_bench():
    return _module(BENCH / "label_memory.py")


@pytest.fixture(scope="module")
def throughput_bench():
    return _module(BENCH / "label_throughput.py")


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory) -> Path:
    """One tiny experiment for the session, trained by the first pytest-xdist worker that asks
    (the others wait on the lock, then read it): the benches only read an experiment."""
    from teacherkit.testing import train_tiny_pair

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above every worker's own
    root = shared / "bench-tiny-experiment"
    with open(shared / "bench-tiny-experiment.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "trained").exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed half way
            train_tiny_pair(root)
            (root / "trained").touch()
    return root / "exp"


def _run(bench, *args: str, capsys, cwd: Path, monkeypatch) -> str:
    """``bench``'s main with ``args`` in ``cwd``; what it printed."""
    assert subprocess.run([sys.executable, bench.__file__, "--help"], capture_output=True, text=True,
                          timeout=60).stdout.startswith("usage:")
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = bench.main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, out[-2000:] + err[-3000:]
    return out


def test_workers_option_is_read_from_the_help_before_and_after_it_exists(memory_bench):
    typer_style = ("  --batch-size <int>  Images.  [default: 4]\n"
                   "  --workers <int range>  Readers.  [default: 3; x>=0]\n  --resume  Continue.\n")
    in_text = ("  --workers <int range>  Processes reading the images (default: 2, or\n"
               "      1 with one CPU; 0: here).  [x>=0]\n  -q, --quiet  No bar.\n")
    before = "  --batch-size <int>  Images per pass.  [default: 4]\n  -q, --quiet  No bar.\n"
    assert memory_bench.workers_in_help(typer_style) == (True, "3")
    assert memory_bench.workers_in_help(in_text) == (True, "2, or 1 with one CPU")
    assert memory_bench.workers_in_help(before) == (False, None)


def test_throughput_plan_gives_both_sides_the_same_cpu_budget_and_one_process_per_gpu(throughput_bench):
    cpu = throughput_bench.plan_runs(2, 0)
    assert [(r.name, r.processes, r.threads_per_process, r.device) for r in cpu] == [
        ("plain", 1, 2, "cpu"), ("torchrun-1", 1, 2, "cpu"), ("torchrun-2", 2, 1, "cpu"),
        ("plain-threads-1", 1, 1, "cpu")]
    assert [r.name for r in throughput_bench.plan_runs(1, 0)] == ["plain", "torchrun-1", "torchrun-2"]
    gpu = throughput_bench.plan_runs(16, 4)[4:]
    assert [(r.name, r.processes, r.threads_per_process, r.device) for r in gpu] == [
        ("plain-cuda", 1, 16, "cuda"), ("torchrun-4-cuda", 4, 4, "cuda")]
    command = throughput_bench.label_command(cpu[2], Path("exp"), Path("imgs"), Path("o.json"), 8, ["--workers", "1"])
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert command[-2:] == ["--workers", "1"] and command[command.index("--device") + 1] == "cpu"


def test_a_run_keeps_its_fastest_attempt_and_every_attempt_must_write_the_same_bytes(throughput_bench):
    run = throughput_bench.Run("plain", 1, 2, "cpu", "none")
    for seconds, labelling, digest in ((9.0, 6.0, "a"), (8.0, 4.0, "a"), (12.0, 5.0, "a")):
        run.attempts.append({"seconds": seconds, "images_per_s": 12 / seconds, "labelling_seconds": labelling,
                             "labelling_images_per_s": 12 / labelling, "output_sha256": digest})
    throughput_bench.keep_best(run)
    assert (run.seconds, run.labelling_seconds, run.output_sha256) == (8.0, 4.0, "a")
    two = throughput_bench.Run("torchrun-2", 2, 1, "cpu", "torchrun", attempts=[
        {"seconds": 5.0, "images_per_s": 2.4, "labelling_seconds": 2.0, "labelling_images_per_s": 6.0,
         "output_sha256": digest} for digest in ("b", "c")])
    throughput_bench.keep_best(two)
    assert two.output_sha256 == "differs between attempts"
    outputs = throughput_bench.summarise([run, two])["outputs"]["cpu"]
    assert outputs["by_threads_per_process"]["1"]["identical"] is False and not outputs["identical"]
    assert outputs["by_threads_per_process"]["2"]["identical"] is True


def test_image_names_are_hard_links_to_a_few_distinct_files(memory_bench, tmp_path):
    folder = memory_bench.make_images(tmp_path / "images", 25, 16, distinct=4)
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 25 and len({f.name for f in files}) == 25
    assert len({os.stat(f).st_ino for f in files}) == 4


@pytest.mark.slow
def test_label_memory_small_sizes_measure_the_workers_too(memory_bench, tiny_experiment, tmp_path, capsys,
                                                          monkeypatch):
    out = tmp_path / "label_memory.json"
    printed = _run(memory_bench, "--sizes", "6", "12", "--side", "32", "--workers", "1", "--pss-every", "0.5",
                   "--experiment", str(tiny_experiment), "--workdir", str(tmp_path / "work"), "--json-out", str(out),
                   capsys=capsys, cwd=tmp_path, monkeypatch=monkeypatch)
    assert "peak RSS ratio 12 / 6 images, with the workers" in printed
    data = json.loads(out.read_text())
    listed, _default = memory_bench.label_workers_option()
    assert data["settings"]["workers"]["option_listed"] is listed
    assert data["settings"]["workers"]["passed"] == (1 if listed else None)
    for count in ("6", "12"):
        row = data["figures"][count]
        assert row["rc"] == 0 and row["annotations"] == 5 * int(count)  # thresholds 0: 5 boxes an image
        assert row["descendants"] == (1 if listed else 0)  # the one reader process, found and measured
        if listed:
            assert row["descendants_peak_rss_sum_mib"] > 0 and row["children_peak_rss_mib"] > 0
            assert row["tree_peak_rss_mib"] > row["peak_rss_mib"] > 0
        assert row["labelling_tree_peak_rss_mib"] >= row["labelling_peak_rss_mib"] > 0
    assert 0.5 < data["tree_peak_rss_ratio"] < 2 and "tree_peak_rss_mib" in data["measured"]
    render = _module(ROOT / "scripts" / "render_results.py")
    assert "| 12 |" in render.render_label_memory(data)  # the docs' renderer reads this schema


@pytest.mark.slow
def test_label_throughput_small_runs_agree_byte_for_byte(throughput_bench, tiny_experiment, tmp_path, capsys,
                                                         monkeypatch):
    """One thread per process: the plan's three runs (plain, torchrun with 1 and with 2
    processes) all share one thread setting, so all three must write the same bytes. The
    fourth run of a wider machine (one process with each torchrun process's threads) is the
    plan's test above; it would cost a fourth labelling command here and check nothing more."""
    out = tmp_path / "label_throughput.json"
    printed = _run(throughput_bench, "--images", "6", "--side", "32", "--threads", "1", "--workers", "0",
                   "--no-gpu", "--experiment", str(tiny_experiment), "--workdir", str(tmp_path / "work"),
                   "--json-out", str(out), capsys=capsys, cwd=tmp_path, monkeypatch=monkeypatch)
    assert "ratio torchrun-2 / torchrun-1" in printed
    data = json.loads(out.read_text())
    runs = {run["name"]: run for run in data["runs"]}
    assert list(runs) == ["plain", "torchrun-1", "torchrun-2"]
    assert [(r["processes"], r["threads_per_process"], r["torch_threads"]) for r in runs.values()] == [
        (1, 1, 1), (1, 1, 1), (2, 1, 1)]
    assert all(r["images"] == 6 and r["images_per_s"] > 0 for r in runs.values())
    # 2 processes write the bytes of 1 process with the same threads each
    cpu = data["outputs"]["cpu"]
    assert cpu["identical_per_thread_setting"] and cpu["identical"]
    assert cpu["by_threads_per_process"] == {"1": {"runs": ["plain", "torchrun-1", "torchrun-2"], "identical": True}}
    assert len(set(cpu["sha256"].values())) == 1
    assert "outputs of the cpu runs with 1 thread(s) per process (plain, torchrun-1, torchrun-2) byte-identical: yes" \
        in printed
    assert set(data["ratios"]) == {"torchrun-2 / torchrun-1", "torchrun-2 / plain"}
    assert {"torch", "transformers", "peft", "teacherkit"} <= set(data["versions"])
    assert data["machine"]["cpu_count"] >= 1
    listed = data["settings"]["workers"]["option_listed"]
    assert data["settings"]["workers"]["passed"] == (0 if listed else None)
    assert ("--workers" in runs["plain"]["command"]) is listed
