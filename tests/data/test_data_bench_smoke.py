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
    done = subprocess.run([sys.executable, str(BENCH), "--images", "300", "--json"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["file"]["images"] == 300 and out["file"]["annotations"] > 1000
    results = out["results"]
    assert results["validate"]["errors"] == 0  # the generated file is valid COCO
    assert results["pycocotools"]["annotations"] == results["load_coco"]["annotations"] == out["file"]["annotations"]
    # every tool was measured (the figures themselves are the benchmark's, not asserted)
    assert all(math.isfinite(r["seconds"]) and r["peak_rss_mb"] > 0 for r in results.values())
