"""The command line: help, version, plugins listing, config, light imports, error output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from teacherkit import __version__
from teacherkit.cli import run


def test_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"teacherkit {__version__}"


def test_help_lists_core_and_plugin_commands(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("plugins", "config"):
        assert command in out


def test_plugins_json_lists_the_three_plugins_with_hooks(capsys):
    assert run(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert {"dino", "sam", "augment", "builtin-detectors"} <= set(by_name)
    assert by_name["dino"]["distribution"] == "teacherkit-dino"
    assert "teacherkit_register_teachers" in by_name["dino"]["hooks"]
    assert by_name["dino"]["teachers"] == [{"name": "grounding_dino", "learns_from": "boxes"}]
    assert by_name["sam"]["teachers"] == [{"name": "sam", "learns_from": "masks"}]
    assert data["failed"] == []


def test_config_command_prints_resolved_yaml(capsys):
    import yaml

    assert run(["config", "--preset", "tiny", "--set", "training.epochs=2"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["training"]["epochs"] == 2
    assert data["teachers"]["grounding_dino"]["base"] == "tiny"


def test_config_errors_are_one_line_with_exit_2(capsys):
    assert run(["config", "--set", "training.epoks=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set: unknown key 'training.epoks'; did you mean training.epochs")
    assert "Traceback" not in err


def test_unknown_command_is_a_usage_error(capsys):
    assert run(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


HEAVY_MODULES = ("torch", "transformers", "numpy", "albumentations", "cv2", "peft", "accelerate", "scipy",
                 "matplotlib", "PIL", "pycocotools")


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["plugins", "--json"]])
def test_light_commands_import_no_heavy_library(argv):
    # a fresh interpreter, so that nothing another test imported counts; how long it takes
    # is measured by bench/cli_startup.py, not asserted here
    code = (
        "import sys; from teacherkit.cli import run; "
        f"rc = run({argv!r}); "
        f"heavy = sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules); "
        "print('\\nRESULT', rc, ','.join(heavy) or '-')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT")][-1].split()
    assert line[1] == "0", result.stderr
    assert line[2] == "-", f"`teacherkit {' '.join(argv)}` imported {line[2]}"


@pytest.mark.slow
def test_console_script_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "teacherkit.cli", "config", "--config", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nope.yaml: config file not found" in result.stderr
    assert "Traceback" not in result.stderr
