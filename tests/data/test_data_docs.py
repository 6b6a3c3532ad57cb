"""The check catalogue and the CLI flags in the docs cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer

from teacherkit.data.commands import register
from teacherkit.data.findings import CHECKS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_check_is_documented_with_severity_and_fixability() -> None:
    text = (DOCS / "data.md").read_text()
    rows = {code: severity for code, severity, _fixable in
            re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| ([^|]+?) \| (yes|no) \|", text, flags=re.M)}
    assert set(rows) == set(CHECKS)
    for code, check in CHECKS.items():
        assert rows[code].split()[0] == check.severity, code
    fixable = dict(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| [^|]+ \| (yes|no) \|", text, flags=re.M))
    assert {c for c, v in fixable.items() if v == "yes"} == {c for c, k in CHECKS.items() if k.fixable}


def test_every_flag_is_documented() -> None:
    app = typer.Typer()
    register(app)
    command = typer.main.get_command(app)
    text = (DOCS / "cli.md").read_text()
    for name in ("inspect", "validate"):
        assert f"## teacherkit {name}" in text
        for param in command.commands[name].params:
            if isinstance(param, click.Option):
                for flag in param.opts + param.secondary_opts:
                    assert f"`{flag}" in text or f"/ {flag}`" in text, (name, flag)
