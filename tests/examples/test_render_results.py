"""scripts/render_results.py: the docs' result tables are generated from bench/results/*.json, so a
figure in the docs always has its file, and ``--check`` fails when a doc drifts from its JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.examples.example_paths import EXAMPLES

ROOT = EXAMPLES.parent
SCRIPT = ROOT / "scripts" / "render_results.py"


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("render_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repository_docs_are_generated_from_their_results_files():
    for doc in (ROOT / "README.md", ROOT / "docs" / "teacher-quality.md"):
        assert "<!-- results: quality" in doc.read_text(encoding="utf-8"), doc  # the check is not vacuous
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def _row(seed, teacher, base, lora, full, base_a, lora_a, full_a):
    import quality  # examples/ is on sys.path through tests.examples.example_paths

    row = {"seed": seed, "teacher": teacher, "full_lr": 1e-3, "base_B": base, "lora_B": lora, "full_B": full,
           "base_A": base_a, "lora_A": lora_a, "full_A": full_a, "scales": {"0.5": {"B": base, "A": base_a}}}
    return quality.with_ratios(row)


def small_results():
    """Two seeds, one teacher of each kind; seed 7's detector misses the gain target, the mean meets it."""
    import quality

    rows = [_row(42, "grounding_dino", 0.1, 0.3, 0.2, 0.9, 0.9, 0.8),
            _row(7, "grounding_dino", 0.1, 0.15, 0.2, 0.9, 0.81, 0.9),
            _row(42, "sam", 0.4, 0.6, 0.5, 0.95, 0.95, 0.9), _row(7, "sam", 0.4, 0.5, 0.5, 0.95, 0.779, 0.9)]
    val = [{"seed": s, "teacher": t, "candidate": c, "B": b, "A": 0.9, "retention": r}
           for s in (42, 7) for t in quality.METRICS
           for c, b, r in (("lora", 0.5, 0.95), ("full-lr3e-4", 0.4, 0.95), ("full-lr1e-3", 0.45, 0.85))]
    aggregates, checks = quality.aggregate(rows)
    return {"kind": "quality", "date": "2026-01-02T00:00:00+00:00", "command": "python examples/quality.py",
            "machine": {"cpu_count": 2, "torch_threads": 1}, "seeds": [42, 7], "metrics": quality.METRICS,
            "targets": {"gain": 0.95, "retention": 0.9}, "per_seed": rows, "aggregates": aggregates,
            "checks": checks, "choice": quality.choose(val, [3e-4, 1e-3])}


def test_tables_show_mean_and_range_and_the_worst_seed(render):
    data = small_results()
    table = render.render_quality(data)
    # LoRA on B: mean 0.225 of 0.3 and 0.15; the gain ratio of the means is 0.125 / 0.1
    assert "| grounding_dino (bbox_AP) | 0.100 | 0.225 (0.150–0.300) | 0.200 |" in table
    assert "| 125% (50%–200%) |" in table
    targets = render.render_targets(data)
    assert "| grounding_dino | LoRA gain ≥ 95% of full's | 125% | 50% (seed 7) | yes | **no** |" in targets
    assert "| sam | LoRA retention on A ≥ 90% | 91% | 82% (seed 7) | yes | **no** |" in targets
    # full at 1e-3 scores more on val B but keeps 85% of A: the rule picks 3e-4
    assert data["choice"]["chosen"] == {"grounding_dino": "full-lr3e-4", "sam": "full-lr3e-4"}
    assert "| sam | full-lr3e-4 | 0.400 | 95.0% | **yes** |" in render.render_choice(data)


def test_regions_are_rewritten_from_the_newest_file_and_check_sees_drift(render, tmp_path):
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    old = small_results()
    old["aggregates"]["sam"]["lora_B"] = {"mean": 0.111, "min": 0.111, "max": 0.111}
    (results / "quality-2026-01-01.json").write_text(json.dumps(old))
    (results / "quality-2026-01-02.json").write_text(json.dumps(small_results()))
    doc = tmp_path / "README.md"
    doc.write_text("# x\n\nbefore\n<!-- results: quality-readme -->\nstale figure 0.999\n<!-- /results -->\nafter\n")
    assert render.main(["--root", str(tmp_path), "--check"]) == 1
    assert render.main(["--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "0.999" not in text and "before\n" in text and text.endswith("<!-- /results -->\nafter\n")
    assert "sam: mIoU on domain B's test split 0.400 (base) → 0.550 (0.500–0.600) (LoRA)" in text
    assert "`bench/results/quality-2026-01-02.json`" in text
    assert render.main(["--root", str(tmp_path), "--check"]) == 0
    # a marker may name its file: the older one gives other figures, so the doc is out of date again
    doc.write_text(text.replace("results: quality-readme -->", "results: quality-readme "
                                "bench/results/quality-2026-01-01.json -->"))
    assert render.main(["--root", str(tmp_path), "--check"]) == 1


@pytest.mark.parametrize("marker, message", [
    ("<!-- results: nonsense -->", "README.md:3: '<!-- results: nonsense -->': expected one of"),
    ("<!-- results: quality bench/results/missing.json -->", "README.md:3: bench/results/missing.json: no such"),
])
def test_a_bad_marker_names_the_doc_and_line_and_exits_2(render, tmp_path, capsys, marker, message):
    (tmp_path / "README.md").write_text(f"# x\n\n{marker}\n<!-- /results -->\n")
    assert render.main(["--root", str(tmp_path), "--check"]) == 2
    assert message in capsys.readouterr().err


def _record(kind: str, **figures):
    return {"kind": kind, "date": "2026-01-02T00:00:00Z", "command": f"python bench/{kind}.py --json x.json",
            "machine": {"cpu_count": 2, "platform": "Linux", "processor": "x86_64", "gpu": None},
            "versions": {"torch": "2", "transformers": "5", "peft": "0.21", "teacherkit": "0.1"}, **figures}


def test_the_three_bench_tables_put_teacherkit_next_to_its_reference(render, tmp_path):
    augment = _record("augment_throughput", settings={"size": 1024, "instances": 6, "images": 8, "iterations": 100},
                      rows=[{"pipeline": p, "annotations": "masks", "images_per_s_cpu": ips, "vs_albumentations": r}
                            for p, ips, r in (("medium", 26.7, 2.39), ("albumentations", 11.2, 1.0))])
    assert "| medium (teacherkit-augment) | 26.7 | 2.39× |" in render.render_augment_throughput(augment)
    train = _record("train_throughput", size="tiny", device="cpu", card="x86_64", amp=False, batch=2, steps=30,
                    threads=1, speed_basis="CPU seconds",
                    results=[{"workload": "gdino_lora", "variant": v, "images_per_second": ips, "cpu_seconds": cpu,
                              "peak_gib": None, "error": err}
                             for v, ips, cpu, err in (("plain", 18.0, 1.2, None), ("teacherkit", 19.0, 1.0, None),
                                                      ("bf16_frozen", None, None, "RuntimeError: no bf16"))],
                    ratios=[{"workload": "gdino_lora", "variant": "teacherkit", "speed_ratio": 1.2,
                             "memory_ratio": None}])
    table = render.render_train_throughput(train)
    assert "| gdino_lora | plain | 18.0 | 1.20 | - | 1.00× (reference) | - |" in table
    assert "| gdino_lora | teacherkit | 19.0 | 1.00 | - | 1.20× | - |" in table
    assert "| gdino_lora | bf16_frozen | failed: RuntimeError: no bf16 |" in table  # a failed variant is shown
    big = {"workload": "sam_frozen_3ep", "variant": "decoder_batch", "images_per_second": 60.0, "cpu_seconds": 0.5,
           "peak_gib": None, "error": None, "notes": {"batch": 16}}
    table = render.render_train_throughput({**train, "results": [big], "ratios": []})
    assert "| sam_frozen_3ep | decoder_batch (batch 16) | 60.0 |" in table  # a variant at its own batch says so
    stage = {"read_ms": 10.0, "augment_ms": 37.5, "preprocess_ms": 2.7, "collate_ms": 0.4, "img_per_s": 19.4,
             "mb_per_item": 2.7}
    pipeline = _record("data_pipeline", settings={"image": [800, 1200], "items": 48, "objects": 6, "batch": 4,
                                                  "augmentation": "medium"},
                       results=[{"teacher": "sam", "one_worker": stage, "loader_img_per_s": {"0": 9.4, "1": 6.9},
                                 "gpu_rate": 30.0, "gpu_rate_source": "the perf notes", "workers_needed": 2}])
    table = render.render_data_pipeline(pipeline)
    assert "| sam | 10.0 | 37.5 | 2.7 | 0.4 | 19.4 | 2.7 | 9.4 / 6.9 | 30 | 2 |" in table
    assert "DataLoader 0 / 1 workers" in table and "Reference GPU rates: the perf notes." in table
    # the caption names the machine, and that it had no GPU
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "data_pipeline-2026-01-02.json").write_text(json.dumps(pipeline))
    region = render.render_region("data_pipeline", tmp_path)
    assert "(`python bench/data_pipeline.py --json x.json`, 2026-01-02, 2 CPUs, no GPU)" in region


def test_frozen_encoder_tables_show_the_cached_epochs_against_the_plain_loops(render):
    """Epochs 2+ come from each variant's per-epoch seconds (images spread evenly over the epochs);
    a variant timed on a warm cache only is all cached phase; the objects per image are said."""
    def row(variant, ips, notes):
        return {"workload": "sam_frozen_3ep", "variant": variant, "images_per_second": ips, "cpu_seconds": 1.0,
                "peak_gib": 2.0, "error": None, "images": 48, "notes": notes}

    data = _record("train_throughput", size="full", device="cuda", card="H200", amp=True, batch=8, steps=6,
                   objects=1, threads=1, speed_basis="img/s",
                   results=[row("plain", 40.0, {"epoch_seconds": [0.4, 0.4, 0.4]}),
                            row("teacherkit", 60.0, {"epoch_seconds": [0.6, 0.1, 0.1]}),
                            row("decoder_batch", 500.0, {"batch": 64, "cache": {"hits": 48, "misses": 0}}),
                            row("sdpa_attention", 30.0, {"cache": {"hits": 8, "misses": 8}})],
                   ratios=[])
    table = render.render_train_throughput(data)
    assert "batch 8, 1 object per image, 6 timed steps" in table
    assert "| epochs 2+: img/s (vs plain) |" in table.splitlines()[2]
    assert table.splitlines()[4].endswith("| 40.0 (1.00×) |")  # 32 images in 0.8 s
    assert table.splitlines()[5].endswith("| 160.0 (4.00×) |")  # 32 images in 0.2 s
    assert table.splitlines()[6].endswith("| 500.0 (12.50×) |")  # no miss: every step was the cached phase
    assert table.splitlines()[7].endswith("| - |")  # neither timed by epoch nor all hits


def test_the_views_table_puts_each_variant_next_to_the_base(render):
    stats = {"mean": 0.5, "min": 0.4, "max": 0.6}
    data = {"seeds": [42, 1], "base": {"B": 0.369, "A": 0.948},
            "rows": [{"variant": "fresh", "views": 0}, {"variant": "views2", "views": 2}],
            "summary": {"fresh": {"B": stats, "A": {"mean": 0.9, "min": 0.9, "max": 0.9},
                                  "train_seconds": {"mean": 101.4}},
                        "views2": {"B": {"mean": 0.55, "min": 0.5, "max": 0.58}, "A": stats,
                                   "train_seconds": {"mean": None}}}}
    table = render.render_sam_views(data)
    assert "| base, untrained | 0.369 | 0.948 | - |" in table
    assert "| a fresh view every epoch (`cache_views: 0`) | 0.500 (0.400–0.600) | 0.900 | 101 |" in table
    assert "| 2 views (`cache_views: 2`) | 0.550 (0.500–0.580) | 0.500 (0.400–0.600) | - |" in table
    assert "over seeds 42, 1;" in table
    precision = {**data, "rows": [{"variant": "autocast"}, {"variant": "bf16"}],
                 "summary": {"autocast": data["summary"]["fresh"], "bf16": data["summary"]["views2"]}}
    table = render.render_gdino_frozen_precision(precision)
    assert "| variant | bbox AP on B (test) | bbox AP on A (test) | training s |" in table
    assert "| `frozen_precision: autocast` (default) | 0.500 (0.400–0.600) | 0.900 | 101 |" in table
    assert "| `frozen_precision: bf16` | 0.550 (0.500–0.580) |" in table


def test_performance_doc_has_no_hand_written_tables_left():
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    for name in ("augment_throughput", "train_throughput", "data_pipeline"):
        assert f"<!-- results: {name} -->" in text
    assert "No results file yet" not in text


def _throughput_record(identical: bool, per_thread: bool, workers: object) -> dict:
    run = {"name": "plain", "processes": 1, "threads_per_process": 2, "seconds": 10.0, "images_per_s": 40.0,
           "labelling_images_per_s": 50.0}
    two = dict(run, name="torchrun-2", processes=2, threads_per_process=1, images_per_s=48.0,
               labelling_images_per_s=None)
    return {"settings": {"images": 400, "side": 64, "batch_size": 8, "repeat": 2, "workers": {"in_effect": workers}},
            "runs": [run, two], "ratios": {"torchrun-2 / plain": {"images_per_s": 1.2, "labelling_images_per_s": 1.75}},
            "outputs": {"cpu": {"identical": identical, "identical_per_thread_setting": per_thread}}}


@pytest.mark.parametrize(("identical", "per_thread", "said"), [
    (True, True, "every run byte-identical"),
    (False, True, "byte-identical among runs with the same threads per process"),
    (False, False, "DIFFERENT between runs with the same threads per process"),
])
def test_label_throughput_table_says_rates_ratios_and_whether_outputs_matched(render, identical, per_thread, said):
    text = render.render_label_throughput(_throughput_record(identical, per_thread, 2))
    assert "| torchrun-2 | 2 × 1 | 10 | 48.0 | n/a |" in text  # a missing rate is said, not invented
    assert "torchrun-2 / plain: 1.75× labelling, 1.20× whole command" in text
    assert said in text and "--workers 2;" in text
    text = render.render_label_throughput(_throughput_record(True, True, "2, or 1 with one CPU"))
    assert "label's default --workers: 2, or 1 with one CPU" in text


def test_the_quick_start_timing_is_shown_against_the_readme_promise(render):
    rows = [{"command": "teacherkit train --config examples/quickstart.yaml --output /tmp/q/run", "wall_s": 120.4,
             "cpu_s": 200.0},
            {"command": "teacherkit evaluate /tmp/q/run --data examples/domain_b/test.json", "wall_s": 20.0,
             "cpu_s": 30.5}]
    record = _record("quickstart", promise_s=180.0, rows=rows, total_wall_s=140.4, total_cpu_s=230.5,
                     machine={"cpu_count": 2})
    table = render.render_quickstart(record)
    assert "| `teacherkit train` | 120.4 | 200.0 |" in table and "| both | 140.4 | 230.5 |" in table
    assert "within the README's 180 s" in table
    assert "**over**" in render.render_quickstart({**record, "total_wall_s": 190.0})


def test_gdino_stage_tables_show_phases_parts_and_graph_probes(render):
    stages = _record("gdino_stages", size="full", device="cuda", batch=8, steps=10, amp=True, step_ms=176.3,
                     img_per_s=45.4, peak_gib=7.84,
                     phases_ms={"forward": 133.1, "loss": 7.0, "host_read": 0.2, "backward": 34.6, "optimizer": 0.7},
                     forward_ms={"text_backbone": 9.1, "backbone": 37.2, "encoder": 58.3, "decoder": 22.3},
                     profile={"gpu_kernel_ms_per_step": 150.0, "host_op_ms_per_step": 113.9,
                              "kernel_launches_per_step": 6786, "host_waits_per_step": 8,
                              "top_ops": [{"op": "aten::copy_", "ms_per_step": 38.3, "calls_per_step": 2491}]})
    table = render.render_gdino_stages(stages)
    assert "| 176.3 | 45.4 | 133.1 | 7.0 | 0.2 | 34.6 | 0.7 | 7.84 |" in table
    assert "| ms | 9.1 | 37.2 | 58.3 | 22.3 |" in table
    assert "150.0 ms of GPU kernels" in table and "`aten::copy_` 38.3 ms (2491 calls)" in table
    cpu = render.render_gdino_stages({**stages, "peak_gib": None,
                                      "profile": {**stages["profile"], "gpu_kernel_ms_per_step": None}})
    assert "GPU kernels" not in cpu and "most host time" in cpu  # a CPU run has no GPU figure to show
    graphs = {**stages, "graphs": {"text_backbone": {"eager_ms": 8.0, "replay_ms": 1.2, "graph_mib": 33.6,
                                                     "max_abs_diff": 0.0},
                                   "encoder": {"eager_ms": 54.6, "error": "RuntimeError: capture failed"}}}
    table = render.render_gdino_graphs(graphs)
    assert "| text encoder | 8.0 | 1.2 | 0.15× | 34 | 0 |" in table
    assert "| encoder | capture failed: RuntimeError: capture failed |" in table
