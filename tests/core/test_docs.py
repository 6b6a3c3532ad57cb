"""Docs cannot drift: every hook and every CLI command is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from teacherkit import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _hooks():
    return sorted(name for name in dir(hookspecs) if name.startswith("teacherkit_"))


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_is_documented_with_its_exact_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    text = (DOCS / "plugins.md").read_text()
    assert f"#### `{hook}({params})`" in text, f"docs/plugins.md lacks a heading for {hook}({params})"


@pytest.mark.parametrize("hook", _hooks())
def test_every_hookspec_has_a_full_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Called" in doc, f"{hook}: say when it is called"
    assert ":return:" in doc or "return values are ignored" in doc.lower()
    for param in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f":param {param}:" in doc, f"{hook}: document :param {param}:"


def test_documented_hooks_exist():
    text = (DOCS / "plugins.md").read_text()
    documented = set(re.findall(r"#### `(teacherkit_\w+)\(", text))
    assert documented == set(_hooks())


def _commands():
    """Every command path of the CLI (``train``, ``augment preview``) with its options."""
    import typer.main

    from teacherkit.cli import build_app

    click_app = typer.main.get_command(build_app())
    out = []

    def walk(cmd, path):
        sub = getattr(cmd, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*path, name])
        elif path:
            flags = [opt for p in cmd.params for opt in getattr(p, "opts", []) if opt.startswith("--")]
            out.append((" ".join(path), flags))

    walk(click_app, [])
    return out


def test_every_cli_command_and_flag_is_documented():
    text = (DOCS / "cli.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    by_heading = {s.splitlines()[0].strip().strip("`"): s for s in sections[1:]}
    problems = []
    for path, flags in _commands():
        heading = f"teacherkit {path}"
        if heading not in by_heading:
            problems.append(f"missing section '## {heading}'")
            continue
        for flag in flags:
            if flag != "--help" and flag not in by_heading[heading]:
                problems.append(f"{heading}: flag {flag} undocumented")
    assert problems == []
