"""The scale benchmark runs end to end at a small size (CI smoke test)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "validate_scale.py"


@pytest.mark.slow
def test_validate_scale_smoke(tmp_path: Path) -> None:
    out_file = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(BENCH), "--images", "300", "--json-out", str(out_file)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "bbox_areas file" in done.stdout and "teacherkit inspect" in done.stdout  # side by side, one run
    out = json.loads(out_file.read_text())
    assert out["command"].startswith("python bench/validate_scale.py --images 300")
    assert out["machine"]["cpu_count"] >= 1 and out["date"]
    assert set(out["versions"]) == {"python", "teacherkit", "pycocotools", "msgspec", "numpy"}
    consistent, flagged = out["files"]["consistent"], out["files"]["bbox_areas"]
    assert consistent["file"]["images"] == 300 and consistent["file"]["annotations"] > 1000
    results = consistent["results"]
    assert results["validate"]["errors"] == 0  # the generated file is valid COCO
    annotations = consistent["file"]["annotations"]
    assert results["pycocotools"]["annotations"] == results["load_coco"]["annotations"] == annotations
    assert results["inspect"]["annotations"] == annotations and results["inspect"]["kinds"] == ["boxes", "masks"]
    # every polygon annotation of the bbox-area file draws its warning
    assert flagged["results"]["validate"]["codes"]["area.inconsistent"] > 0.9 * annotations
    # every tool was measured (the figures themselves are the benchmark's, not asserted)
    for figures in (consistent, flagged):
        assert all(math.isfinite(r["cpu_seconds"]) and r["peak_rss_mb"] > 0 for r in figures["results"].values())
        assert all(isinstance(t["met"], bool) for t in figures["targets"])
