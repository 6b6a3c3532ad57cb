"""The benchmarks run at tiny size on the CPU and print their ratios (CI smoke). (That the
sync-free Grounding DINO loss they measure computes what transformers' criterion does is a
test of the plugin: plugins/teacherkit_dino/tests/test_dino_loss.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=150, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_train_throughput_tiny_prints_ratios_per_workload(tmp_path: Path) -> None:
    out = tmp_path / "tt.json"
    done = _run("train_throughput.py", "--size", "tiny", "--device", "cpu", "--levers",
                "transformers_loss,torch_msda,sdpa_attention,"
                "transformers_guard,eval_frozen,torch_loss_kernel", "--json", str(out), tmp_path=tmp_path)
    ratios = re.findall(r"^ratio (\S+)\s+(\S+)\s+speed ([0-9.]+)x", done.stdout, flags=re.M)
    found = {(w, v) for w, v, _ in ratios}
    assert {("gdino_lora", "teacherkit"), ("gdino_lora", "transformers_loss"), ("gdino_lora", "torch_msda"),
            ("sam_lora", "teacherkit"), ("sam_lora", "sdpa_attention"), ("sam_frozen_3ep", "teacherkit"),
            ("sam_frozen_3ep", "warm_cache")} <= found
    assert all(float(x) > 0 for _, _, x in ratios)
    data = json.loads(out.read_text())
    by_key = {(r["workload"], r["variant"]): r for r in data["results"]}
    assert not any(r["error"] for r in data["results"]), [r["error"] for r in data["results"]]
    # the record the docs' table is rendered from: machine, date, versions, the exact command
    assert data["kind"] == "train_throughput" and data["command"].startswith("python bench/train_throughput.py --size")
    assert data["machine"]["cpu_count"] >= 1 and "gpu" in data["machine"] and data["date"]
    assert set(data["versions"]) >= {"torch", "transformers", "peft", "teacherkit"}
    # on a CPU device the ratios come from CPU seconds, measured for both loops
    assert data["speed_basis"] == "CPU seconds" and by_key[("gdino_lora", "plain")]["cpu_seconds"] > 0
    frozen = by_key[("sam_frozen_3ep", "teacherkit")]["notes"]
    # three epochs over the same images: the first fills the cache, the next two only hit it
    assert len(frozen["epoch_seconds"]) == 3
    cache = frozen["cache"]
    assert cache["misses"] == cache["entries"] > 0 and cache["hits"] >= cache["misses"]
    # a warm cache (a later run on the same images): no epoch runs the encoder
    warm = by_key[("sam_frozen_3ep", "warm_cache")]["notes"]["cache"]
    assert warm["misses"] == 0 and warm["hits"] > 0
    # the cached phase at 8x the batch: fewer, larger steps over as many images, all from the cache
    big = by_key[("sam_frozen_3ep", "decoder_batch")]
    assert big["notes"]["batch"] == 8 * data["batch"] and big["notes"]["cache"]["misses"] == 0
    assert big["images"] >= by_key[("sam_frozen_3ep", "warm_cache")]["images"]
    # the device store and the PyTorch loss lever train from the same cache (every variant's
    # batches carry the keys, whichever teacher's preprocessor made them)
    for variant in ("decoder_batch_device", "decoder_batch_device_torch_loss"):
        assert by_key[("sam_frozen_3ep", variant)]["notes"]["cache"]["misses"] == 0
        assert by_key[("sam_frozen_3ep", variant)]["notes"]["cache"]["hits"] > 0
    device = by_key[("sam_frozen_3ep", "device_cache")]["notes"]["cache"]
    assert device["misses"] == device["entries"] > 0 and device["hits"] >= device["misses"]
    # the SAM variants say which attention ran: the plugin's folded one unless the lever reverts it
    assert by_key[("sam_lora", "teacherkit")]["notes"]["attention"].startswith("folded")
    assert by_key[("sam_lora", "sdpa_attention")]["notes"]["attention"].startswith("sdpa")
    # Grounding DINO's levers on the encoder: transformers' guard back, the frozen parts in eval mode
    assert ("gdino_lora", "transformers_guard") in found
    assert by_key[("gdino_lora", "eval_frozen")]["notes"]["eval_modules"] > 0


@pytest.mark.slow
def test_msda_kernel_tiny_matches_transformers(tmp_path: Path) -> None:
    pytest.importorskip("triton")
    out = tmp_path / "msda.json"
    done = _run("msda_kernel.py", "--size", "tiny", "--json", str(out), tmp_path=tmp_path)
    assert "ratio kernel vs transformers" in done.stdout
    data = json.loads(out.read_text())
    assert data["max_abs_diff"] < 1e-5 and set(data["rows"]) == {"transformers", "kernel"}
    # a results file's record: machine, date, versions, the exact command
    assert data["kind"] == "msda_kernel" and data["command"] == f"python bench/msda_kernel.py --size tiny --json {out}"
    assert data["machine"]["cpu_count"] >= 1 and data["date"] and data["versions"]["torch"]


@pytest.mark.slow
def test_data_pipeline_tiny_reports_workers_needed(tmp_path: Path) -> None:
    out = tmp_path / "dp.json"
    done = _run("data_pipeline.py", "--size", "tiny", "--max-workers", "1", "--gpu-rate", "sam=500",
                "--json", str(out), tmp_path=tmp_path)
    assert "workers needed" in done.stdout
    # per-stage costs, printed for each teacher and for SAM's frozen encoder before and after its views repeat
    assert len(re.findall(r"per image \(CPU ms\): read [0-9.]+, augment [0-9.]+, preprocess [0-9.]+, "
                          r"collate [0-9.]+", done.stdout)) == 4
    record = json.loads(out.read_text())
    assert record["kind"] == "data_pipeline" and record["command"].startswith("python bench/data_pipeline.py --size")
    assert record["machine"]["cpu_count"] >= 1 and set(record["versions"]) >= {"torch", "teacherkit"}
    rows = {r["teacher"]: r for r in record["results"]}
    assert set(rows) == {"grounding_dino", "sam", "sam frozen, fresh view", "sam frozen, recorded view"}
    for row in rows.values():
        single = row["one_worker"]
        assert single["img_per_s"] > 0 and row["workers_needed"] >= 1 and single["mb_per_item"] > 0
        assert set(row["loader_img_per_s"]) == {"0", "1"}
        stages = [single[f"{s}_ms"] for s in ("read", "augment", "preprocess", "collate")]
        assert all(ms >= 0 for ms in stages) and single["staged"]
        assert abs(sum(stages) - single["total_ms"]) < 1e-6
    sam = rows["sam"]
    assert sam["workers_needed"] == -(-500 // sam["one_worker"]["img_per_s"])
    # a recorded view is neither read as an image nor augmented, and its item carries no pixels
    fresh, recorded = rows["sam frozen, fresh view"]["one_worker"], rows["sam frozen, recorded view"]["one_worker"]
    assert recorded["augment_ms"] == 0 < fresh["augment_ms"] and recorded["mb_per_item"] < fresh["mb_per_item"]
    assert sam["gpu_rate_source"] == "--gpu-rate" and "perf notes" in rows["grounding_dino"]["gpu_rate_source"]


@pytest.mark.slow
def test_augment_throughput_writes_its_record_next_to_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "aug.json"
    done = _run("augment_throughput.py", "--size", "96", "--instances", "2", "--images", "2", "--iterations", "3",
                "--boxes-too", "--json", str(out), tmp_path=tmp_path)
    assert "vs albumentations" in done.stdout
    record = json.loads(out.read_text())
    assert record["kind"] == "augment_throughput" and record["command"].startswith("python bench/augment_")
    assert record["machine"]["cpu_count"] >= 1 and record["settings"]["size"] == 96
    rows = {(r["pipeline"], r["annotations"]): r for r in record["rows"]}
    assert set(rows) == {(p, k) for p in ("identity", "medium", "albumentations") for k in ("masks", "boxes")}
    for (_, kind), row in rows.items():
        reference = rows[("albumentations", kind)]["images_per_s_cpu"]
        assert row["vs_albumentations"] == pytest.approx(row["images_per_s_cpu"] / reference, rel=1e-2)


@pytest.mark.slow
def test_sam_preprocess_tiny_agrees_with_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "sp.json"
    done = _run("sam_preprocess.py", "--size", "tiny", "--json", str(out), tmp_path=tmp_path)
    assert "DIFFER" not in done.stdout
    data = json.loads(out.read_text())
    assert data["image_size"] == 96
    assert {r["part"] for r in data["rows"]} == {"targets", "preprocess"}
    assert all(r["mismatch"] is None and r["ours_s"] > 0 and r["reference_s"] > 0 for r in data["rows"])


@pytest.mark.slow
def test_cli_startup_prints_every_command_next_to_the_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    done = _run("cli_startup.py", "--repeat", "1", "--json", str(out), tmp_path=tmp_path)
    for name in ("teacherkit --help", "teacherkit plugins --json", "import torch"):
        assert name in done.stdout
    data = json.loads(out.read_text())
    assert set(data["median_seconds"]) == {line.split("  ")[0].strip() for line in done.stdout.splitlines()[1:]}
    assert data["machine"]["python"] and data["command"].endswith("--json " + str(out))


def test_eval_metrics_prints_both_ways_and_writes_its_record(tmp_path: Path) -> None:
    out = tmp_path / "em.json"
    done = _run("eval_metrics.py", "--images", "4", "--per-image", "2", "--size", "96x128", "--epochs", "2",
                "--json-out", str(out), tmp_path=tmp_path)
    assert len(re.findall(r"^epoch \d: plain .* teacherkit .* faster", done.stdout, flags=re.M)) == 2
    record = json.loads(out.read_text())
    assert [r["epoch"] for r in record["rows"]] == [1, 2] and record["machine"]["cpus"] >= 1
    assert all(r["plain_cpu_s"] >= 0 and r["teacherkit_cpu_s"] >= 0 for r in record["rows"])


def test_quickstart_time_runs_the_readme_commands_in_a_folder_of_its_own(tmp_path: Path) -> None:
    """What the quick-start timing runs is README command 1's teacherkit commands, as written,
    with the run folder moved out of the reader's runs/ (nothing is run here)."""
    readme = BENCH.parent / "README.md"
    done = _run("quickstart_time.py", "--print-commands", tmp_path=tmp_path)
    commands = done.stdout.splitlines()
    assert [c.split()[:2] for c in commands] == [["teacherkit", "train"], ["teacherkit", "evaluate"]]
    assert "runs/quickstart" not in done.stdout
    block = readme.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("```bash\n", 1)[1]
    run_dir = commands[1].split()[2]
    for command in commands:  # each is the README's, but for the run folder
        assert command.replace(run_dir, "runs/quickstart") in block


@pytest.mark.slow
def test_gdino_stages_times_every_phase_and_part_of_the_step(tmp_path: Path) -> None:
    out = tmp_path / "stages.json"
    done = _run("gdino_stages.py", "--size", "tiny", "--device", "cpu", "--steps", "2", "--json", str(out),
                tmp_path=tmp_path)
    assert re.search(r"^step [0-9.]+ ms", done.stdout, flags=re.M)
    data = json.loads(out.read_text())
    assert data["kind"] == "gdino_stages" and data["command"].startswith("python bench/gdino_stages.py --size tiny")
    assert data["machine"]["cpu_count"] >= 1 and data["date"] and data["versions"]["torch"]
    phases, parts = data["phases_ms"], data["forward_ms"]
    assert set(phases) == {"forward", "loss", "host_read", "backward", "optimizer"}
    assert set(parts) == {"text_backbone", "backbone", "encoder", "decoder"} and all(v > 0 for v in parts.values())
    # the parts run inside the forward, and the phases inside the step
    assert sum(parts.values()) <= phases["forward"] * 1.05 and sum(phases.values()) <= data["step_ms"] * 1.05
    prof = data["profile"]
    assert prof["host_op_ms_per_step"] > 0 and prof["top_ops"] and prof["gpu_kernel_ms_per_step"] is None
    assert "graphs" not in data  # CUDA only


def test_the_variant_quality_benches_summarise_each_variant_over_its_seeds() -> None:
    """bench/sam_views.py and gdino_frozen_precision.py train for minutes, so CI checks their
    bookkeeping: variant names and the mean and min–max per variant the docs' table is rendered from."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sam_views", BENCH / "sam_views.py")
    views = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(views)
    assert views.variant_name(0) == "fresh" and views.variant_name(2) == "views2"
    rows = [{"variant": "fresh", "B": 0.5, "A": 0.9, "train_seconds": 100.0},
            {"variant": "views2", "B": 0.6, "A": 0.8, "train_seconds": 60.0},
            {"variant": "fresh", "B": 0.7, "A": 0.7, "train_seconds": 110.0}]
    summary = views.summarise(rows)
    assert list(summary) == ["fresh", "views2"]
    assert summary["fresh"]["B"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7})
    assert summary["views2"]["train_seconds"] == {"mean": 60.0, "min": 60.0, "max": 60.0}
    with pytest.raises(SystemExit, match="--views x"):
        views.main(["--workdir", "unused", "--views", "x"])
    # bench/gdino_frozen_precision.py trains through the same functions, with its own variants
    spec = importlib.util.spec_from_file_location("gdino_frozen_precision", BENCH / "gdino_frozen_precision.py")
    precision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(precision)
    assert precision.PRECISIONS == ("autocast", "bf16")
    with pytest.raises(SystemExit, match="--seeds 4x"):
        precision.main(["--workdir", "unused", "--seeds", "4x"])
