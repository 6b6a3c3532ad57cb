"""scripts/check_quickstart.py, the gate ``.ci/run`` puts on the real quick start: it passes a
run that learned and kept domain A, and fails one that did not, naming the teacher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_quickstart.py"


def _evaluation(dino=(0.10, 0.30), sam=(0.37, 0.57), ref_dino=(0.90, 0.85), ref_sam=(0.95, 0.93)):
    def entry(data, ref, metric):
        return {"data": {"base": {metric: data[0]}, "tuned": {metric: data[1]}},
                "reference": {"base": {metric: ref[0]}, "tuned": {metric: ref[1]}}}

    return {"teachers": {"grounding_dino": entry(dino, ref_dino, "bbox_AP"), "sam": entry(sam, ref_sam, "mIoU")}}


def _run(tmp_path, evaluation):
    (tmp_path / "evaluation.json").write_text(json.dumps(evaluation))
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False)


def test_a_run_that_learned_and_kept_domain_a_passes(tmp_path):
    done = _run(tmp_path, _evaluation())
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("ok ") == 4


@pytest.mark.parametrize(("evaluation", "says"), [
    (_evaluation(dino=(0.10, 0.12)), "FAIL grounding_dino: bbox_AP on held-out B 0.100 -> 0.120"),
    (_evaluation(sam=(0.37, 0.30)), "FAIL sam: mIoU on held-out B"),
    (_evaluation(ref_sam=(0.95, 0.50)), "FAIL sam: keeps 53% of its domain-A mIoU"),
    ({"teachers": {}}, "FAIL grounding_dino: not evaluated"),
])
def test_a_run_that_did_not_learn_or_forgot_fails_naming_it(tmp_path, evaluation, says):
    done = _run(tmp_path, evaluation)
    assert done.returncode == 1 and says in done.stdout


def test_no_evaluation_file_fails(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "evaluation.json" in done.stdout
