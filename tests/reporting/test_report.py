"""``teacherkit report``: one self-contained page built from the experiment's files."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import typer
from PIL import Image
from typer.testing import CliRunner

from teacherkit.reporting.commands import register
from teacherkit.reporting.report import build_report

IMG = re.compile(r'<img src="data:image/png;base64,([^"]+)"')


def app() -> typer.Typer:
    application = typer.Typer()
    register(application)

    @application.callback()
    def _main() -> None:  # keeps 'report' a named subcommand, as in the real CLI
        pass

    return application


def evaluation_result() -> dict:
    base = {"bbox_AP": 0.2, "bbox_AP50": 0.4, "bbox_per_class_AP": {"circle": 0.1, "square": None}}
    tuned = {"bbox_AP": 0.5, "bbox_AP50": 0.75, "bbox_per_class_AP": {"circle": 0.6, "square": None}}
    return {"adapter_scale": 1.0, "teachers": {"grounding_dino": {
        "data": {"base": base, "tuned": tuned},
        "reference": {"base": {"bbox_AP": 0.4, "bbox_AP50": 0.8}, "tuned": {"bbox_AP": 0.3, "bbox_AP50": 0.8}}}}}


def test_the_page_holds_every_picture_inline_and_nothing_remote(experiment):
    root, facts = experiment
    page = build_report(root)
    pictures = IMG.findall(page)
    # per box teacher: results.png, PR, F1, confusion, best and last grids; per mask teacher: 2 curves
    assert len(pictures) == 6 + 5 == page.count("<img ")
    for data in pictures:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format == "PNG" and min(img.size) > 50
    assert "http://" not in page and "https://" not in page and "file:" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for text in ("grounding_dino", "sam", "epochs: 3", *facts["classes"], "best confidence threshold"):
        assert text in page


def test_tables_share_decimals_per_metric(experiment):
    root, _facts = experiment
    page = build_report(root)
    # bbox_AP of base, best (epoch 3) — one row, one number of decimals
    row = re.search(r"<tr><td>bbox_AP</td>(.*?)</tr>", page).group(1)
    assert re.findall(r'class="num">([^<]*)<', row) == ["0.0500", "0.3123"]
    assert "0.31230" not in page and "104.6000" not in page


def test_evaluate_results_show_base_tuned_gain_and_retention(experiment):
    root, _facts = experiment
    page = build_report(root, evaluation_result())
    row = re.search(r"<tr><td>bbox_AP</td>(.*?)</tr>", page[page.index("evaluate: base"):]).group(1)
    assert re.findall(r'class="num">([^<]*)<', row) == ["0.2000", "0.5000", "+0.3000", "0.4000", "0.3000", "75%"]
    per_class = page[page.index("bbox_per_class_AP (evaluate)"):]
    assert re.search(r"<tr><td>square</td><td class=\"num\">\u2013</td>", per_class)  # undefined, not 0


def test_command_writes_the_page(experiment, tmp_path):
    root, _facts = experiment
    copy = tmp_path / "exp"
    shutil.copytree(root, copy)
    result = CliRunner().invoke(app(), ["report", str(copy)])
    assert result.exit_code == 0, result.output
    assert (copy / "report.html").is_file() and f"report written to {copy / 'report.html'}" in result.output
    (copy / "evaluation.json").write_text(json.dumps(evaluation_result()))  # found without --evaluation
    assert CliRunner().invoke(app(), ["report", str(copy)]).exit_code == 0
    assert "evaluate: base (adapter off) vs tuned" in (copy / "report.html").read_text()
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps(evaluation_result()))
    out = tmp_path / "elsewhere" / "page.html"
    result = CliRunner().invoke(app(), ["report", str(root), "--output", str(out), "--evaluation", str(evaluation)])
    assert result.exit_code == 0, result.output
    assert "evaluate: base (adapter off) vs tuned" in out.read_text()


def test_command_refuses_what_is_not_an_experiment(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app(), ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "missing: folder not found" in result.output
    result = runner.invoke(app(), ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a teacherkit experiment" in result.output
    assert not (tmp_path / "report.html").exists()


def test_command_refuses_a_bad_evaluation_file(experiment, tmp_path):
    root, _facts = experiment
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = tmp_path / "page.html"
    result = CliRunner().invoke(app(), ["report", str(root), "-o", str(out), "--evaluation", str(bad)])
    assert result.exit_code == 2 and "bad.json: not the JSON of 'teacherkit evaluate --json'" in result.output
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(app(), ["report", str(root), "-o", str(out), "--evaluation", str(bad)])
    assert result.exit_code == 2 and "no 'teachers'" in result.output
    result = CliRunner().invoke(app(), ["report", str(root), "-o", str(out), "--evaluation", str(tmp_path / "no")])
    assert result.exit_code == 2 and "no: file not found" in result.output
    assert not out.exists()  # nothing written when the inputs are wrong
