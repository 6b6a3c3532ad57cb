"""The SAM benchmarks (bench/sam_loss.py, bench/sam_cache.py) run at tiny sizes, print
both sides and write their records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_sam_loss_bench_compares_before_and_after(tmp_path):
    out = tmp_path / "sam_loss.json"
    done = _run("sam_loss.py", "--sizes", "64", "--repeats", "1", "--json-out", str(out))
    record = json.loads(out.read_text())
    assert record["benchmark"] == "sam_loss" and len(record["rows"]) == 2  # one image, two images
    assert record["device_waits_per_step"]["after"] == 0 < record["device_waits_per_step"]["before"]
    assert all(row["before_step_s"] > 0 and row["after_step_s"] > 0 for row in record["rows"])
    assert "speed-up" in done.stdout and "not exact" in done.stdout


@pytest.mark.slow
def test_sam_cache_bench_hits_from_the_repeated_view(tmp_path):
    out = tmp_path / "sam_cache.json"
    _run("sam_cache.py", "--size", "tiny", "--image-size", "64", "--images", "4", "--epochs", "2", "--views", "1",
         "--json-out", str(out))
    rows = {(r["variant"], r["epoch"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[("cache, fresh", 1)]["hits"] == 0  # a fresh augmented view every epoch
    assert rows[("cache, 1 views", 0)]["hits"] == 0 and rows[("cache, 1 views", 1)]["hit_rate"] == 1.0
    assert rows[("reference", 1)]["lookups"] == 0
