"""Plugin discovery, hook combination, failure isolation and the blocklist."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from stevedore.extension import Extension, ExtensionManager

from teacherkit import hookimpl
from teacherkit.config import TeacherConfig
from teacherkit.plugins import PluginError, get_plugin_manager
from teacherkit.teachers import TeacherSpec


def _dataset(*anns):
    base = {"bbox": None, "segmentation": None, "keypoints": None}
    return SimpleNamespace(annotations=[SimpleNamespace(**{**base, **a}) for a in anns], images=[], categories=[])


class LineDetector:
    @hookimpl
    def teacherkit_detect_annotations(self, dataset):
        return ["lines"] if any(getattr(a, "lines", None) for a in dataset.annotations) else []


class LineTeacher:
    spec = TeacherSpec(name="line_teacher", learns_from="lines", config_model=TeacherConfig)

    @hookimpl
    def teacherkit_register_teachers(self):
        return [self.spec]


def test_builtin_detectors_are_registered_like_plugins(plugin_host):
    info = {i.name: i for i in plugin_host.infos}
    assert info["builtin-detectors"].builtin
    assert info["builtin-detectors"].hooks == ["teacherkit_detect_annotations"]
    kinds = plugin_host.detect_annotations(_dataset({"bbox": [0, 0, 2, 2]}, {"segmentation": [[0, 0, 1, 0, 1, 1]]}))
    assert kinds == ["boxes", "masks"]
    assert plugin_host.detect_annotations(_dataset({"bbox": [0, 0, 2, 2]})) == ["boxes"]


def test_installed_plugins_declare_their_teachers(plugin_host):
    teachers = plugin_host.teachers()
    assert teachers["grounding_dino"].learns_from == "boxes"
    assert teachers["sam"].learns_from == "masks"
    assert [t.name for t in plugin_host.teachers_for(["boxes"])] == ["grounding_dino"]
    assert {t.name for t in plugin_host.teachers_for(["boxes", "masks"])} == {"grounding_dino", "sam"}
    assert plugin_host.teachers_for([]) == []


def test_detector_results_are_a_union_and_plugins_add_kinds(plugin_host, register_plugin):
    register_plugin(LineDetector(), "lines")
    register_plugin(LineTeacher(), "line-teacher")
    ds = _dataset({"bbox": [0, 0, 1, 1], "lines": [1]}, {"bbox": [1, 1, 1, 1]})
    kinds = plugin_host.detect_annotations(ds)
    assert kinds == ["boxes", "lines"]
    assert "line_teacher" in [t.name for t in plugin_host.teachers_for(kinds)]


def test_list_hooks_are_called_in_lifo_order(plugin_host, register_plugin):
    calls = []

    class First:
        @hookimpl
        def teacherkit_detect_annotations(self, dataset):
            calls.append("first")
            return []

    class Second:
        @hookimpl
        def teacherkit_detect_annotations(self, dataset):
            calls.append("second")
            return []

    register_plugin(First(), "first")
    register_plugin(Second(), "second")
    plugin_host.detect_annotations(_dataset())
    # pluggy calls the most recently registered implementation first
    assert calls == ["second", "first"]


def test_firstresult_hook_can_be_overridden_with_tryfirst(plugin_host, register_plugin):
    spec = plugin_host.teacher("grounding_dino")

    class Builtin:
        @hookimpl
        def teacherkit_make_loss(self, teacher, config, model):
            return "builtin-loss"

    class Override:
        @hookimpl(tryfirst=True)
        def teacherkit_make_loss(self, teacher, config, model):
            return "custom-loss" if teacher.name == "grounding_dino" else None

    class Late:
        @hookimpl
        def teacherkit_make_loss(self, teacher, config, model):
            return "late-loss"

    register_plugin(Override(), "override")
    register_plugin(Builtin(), "builtin-loss")
    register_plugin(Late(), "late")
    assert plugin_host.make_loss(spec, None, None) == "custom-loss"
    plugin_host.unregister("override")
    # without the override, the last registered non-None answer wins
    assert plugin_host.make_loss(spec, None, None) == "late-loss"


def test_firstresult_none_everywhere_is_a_clear_error(register_plugin):
    host = get_plugin_manager(entry_points=False)
    spec = TeacherSpec(name="ghost", learns_from="boxes", config_model=TeacherConfig)
    with pytest.raises(PluginError, match="teacherkit_load_model.*ghost"):
        host.load_model(spec, TeacherConfig(), None, None)


def test_unknown_teacher_lists_installed_ones(plugin_host):
    with pytest.raises(PluginError) as err:
        plugin_host.teacher("grounding_dno")
    msg = str(err.value)
    assert "Did you mean 'grounding_dino'" in msg
    installed = msg.split("Installed teachers: ")[1].split(".")[0].split(", ")
    assert {"grounding_dino", "sam"} <= set(installed)


def test_duplicate_teacher_names_are_refused(plugin_host, register_plugin):
    class Dup:
        @hookimpl
        def teacherkit_register_teachers(self):
            return [TeacherSpec(name="sam", learns_from="masks", config_model=TeacherConfig)]

    register_plugin(Dup(), "dup")
    with pytest.raises(PluginError, match="'sam' is declared twice"):
        plugin_host.teachers()


def test_misspelled_hook_is_rejected_at_registration():
    host = get_plugin_manager(entry_points=False)

    class Typo:
        @hookimpl
        def teacherkit_detect_anotations(self, dataset):
            return []

    with pytest.raises(PluginError, match="does not define"):
        host.register(Typo(), "typo")
    assert "typo" not in host.plugin_names()


def _ext(name, plugin):
    return Extension(name, None, plugin, None)


def test_failure_isolation_with_fake_entry_points():
    class Good:
        @hookimpl
        def teacherkit_register_teachers(self):
            return [TeacherSpec(name="good", learns_from="boxes", config_model=TeacherConfig)]

    class Bad:
        @hookimpl
        def teacherkit_not_a_hook(self):
            return None

    manager = ExtensionManager.make_test_instance([_ext("good", Good()), _ext("bad", Bad())])
    host = get_plugin_manager(extensions=list(manager))
    assert "good" in host.plugin_names()
    assert [f.name for f in host.failures] == ["bad"]
    assert "good" in host.teachers()


def test_blocklist_skips_named_plugins():
    class Good:
        @hookimpl
        def teacherkit_detect_annotations(self, dataset):
            return ["x"]

    manager = ExtensionManager.make_test_instance([_ext("good", Good())])
    host = get_plugin_manager(extensions=list(manager), disabled={"good", "builtin-detectors"})
    assert host.plugin_names() == []
    assert host.detect_annotations(_dataset({"bbox": [0, 0, 1, 1]})) == []


def test_blocklist_from_environment(monkeypatch):
    monkeypatch.setenv("TEACHERKIT_DISABLE_PLUGINS", "sam, augment")
    host = get_plugin_manager()
    assert "sam" not in host.plugin_names() and "augment" not in host.plugin_names()
    assert "dino" in host.plugin_names()
    assert "sam" not in host.teachers()


def _run_cli(*args, env_extra=None, cwd=None):
    import os

    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "teacherkit.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.mark.slow
def test_plugin_whose_import_raises_leaves_cli_working(tmp_path):
    """A real installed-looking entry point (a .dist-info on sys.path) whose module raises."""
    site = tmp_path / "site"
    pkg = site / "broken_tk_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('boom at import')\n")
    dist = site / "broken_tk_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-tk-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[teacherkit.plugins]\nbroken = broken_tk_plugin\n")
    import os

    env = {"PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = _run_cli("plugins", "--json", env_extra=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [f["name"] for f in data["failed"]] == ["broken"]
    assert "boom at import" in data["failed"][0]["error"]
    assert "dino" in [p["name"] for p in data["plugins"]]
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "broken" in result.stderr  # one warning line

    table = _run_cli("plugins", env_extra=env)
    assert table.returncode == 0 and "boom at import" in table.stdout

    verbose = _run_cli("--verbose", "plugins", env_extra=env)
    assert verbose.returncode == 0 and "Traceback" in verbose.stdout + verbose.stderr

    hidden = _run_cli("plugins", "--json", env_extra={**env, "TEACHERKIT_DISABLE_PLUGINS": "broken,sam"})
    data = json.loads(hidden.stdout)
    assert data["failed"] == [] and data["disabled"] == ["broken", "sam"]
    assert "sam" not in [p["name"] for p in data["plugins"]]
