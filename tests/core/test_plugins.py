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
    with pytest.raises(PluginError, match="'sam' is declared twice: by plugin 'sam' and by plugin 'dup'"):
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
    builtins = {"builtin-detectors", "builtin-teacher-defaults"}
    host = get_plugin_manager(extensions=list(manager), disabled={"good", *builtins})
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


# -- attribution: results stay with the plugin that gave them --------------------------


class Silent:
    """Implements the declaration hook but answers None (pluggy drops None results)."""

    @hookimpl
    def teacherkit_register_teachers(self):
        return None


def _declaring(name, kind="boxes"):
    class Declares:
        @hookimpl
        def teacherkit_register_teachers(self):
            return [TeacherSpec(name=name, learns_from=kind, config_model=TeacherConfig)]

    return Declares()


def test_a_plugin_answering_none_does_not_shift_attribution():
    host = get_plugin_manager(entry_points=False)
    host.register(_declaring("alpha"), "a")
    host.register(Silent(), "silent")
    host.register(_declaring("beta"), "b")
    by_plugin = {name: [s.name for s in specs] for name, specs in host.teachers_by_plugin()}
    assert by_plugin == {"a": ["alpha"], "silent": [], "b": ["beta"]}
    assert list(host.teachers()) == ["alpha", "beta"]


def test_plugins_json_attributes_teachers_past_a_none_answer(cli_host, capsys):
    from teacherkit.cli import run

    cli_host.register(Silent(), "silent")
    cli_host.register(_declaring("line_teacher", "lines"), "lines")
    assert run(["plugins", "--json"]) == 0
    by_name = {p["name"]: p["teachers"] for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert by_name["silent"] == []
    assert by_name["lines"] == [{"name": "line_teacher", "learns_from": "lines"}]
    assert by_name["dino"] == [{"name": "grounding_dino", "learns_from": "boxes"}]
    assert by_name["sam"] == [{"name": "sam", "learns_from": "masks"}]


def test_duplicate_teacher_blames_the_right_plugin_past_a_none_answer():
    host = get_plugin_manager(entry_points=False)
    host.register(_declaring("alpha"), "first")
    host.register(Silent(), "silent")
    host.register(_declaring("alpha"), "second")
    with pytest.raises(PluginError, match="by plugin 'first' and by plugin 'second'"):
        host.teachers()


# -- a plugin's failure names the plugin and the hook -----------------------------------


class Raises:
    @hookimpl
    def teacherkit_register_teachers(self):
        raise RuntimeError("declaration exploded")


class Exits:
    @hookimpl
    def teacherkit_detect_annotations(self, dataset):
        raise SystemExit(3)


def test_a_raising_hook_names_plugin_and_hook_and_chains_the_cause():
    from teacherkit.plugins import PluginHookError

    host = get_plugin_manager(entry_points=False)
    host.register(Raises(), "boomer")
    with pytest.raises(PluginHookError) as err:
        host.teachers()
    expected = "plugin 'boomer' failed in teacherkit_register_teachers: RuntimeError: declaration exploded"
    assert expected in str(err.value)
    assert isinstance(err.value.__cause__, RuntimeError)


def test_a_hook_calling_sys_exit_is_an_error_not_an_exit():
    from teacherkit.plugins import PluginHookError

    host = get_plugin_manager(entry_points=False)
    host.register(Exits(), "quitter")
    with pytest.raises(PluginHookError, match=r"'quitter' failed in teacherkit_detect_annotations: it called sys.exit"):
        host.detect_annotations(_dataset())


def test_a_list_hook_returning_the_wrong_type_names_the_plugin():
    class Stringly:
        @hookimpl
        def teacherkit_detect_annotations(self, dataset):
            return "keypoints"

    host = get_plugin_manager(entry_points=False)
    host.register(Stringly(), "stringly")
    with pytest.raises(PluginError, match="'stringly' failed in teacherkit_detect_annotations.*list of str"):
        host.detect_annotations(_dataset())


def test_user_errors_raised_by_a_plugin_pass_through_unchanged():
    from teacherkit.errors import DataError

    class Picky:
        @hookimpl
        def teacherkit_detect_annotations(self, dataset):
            raise DataError("data.json: annotation 4 has no keypoints")

    host = get_plugin_manager(entry_points=False)
    host.register(Picky(), "picky")
    with pytest.raises(DataError, match="^data.json: annotation 4"):
        host.detect_annotations(_dataset())


@pytest.mark.parametrize("argv", [["config"], ["inspect", "TRAIN"],
                                  ["train", "--data", "TRAIN", "--preset", "tiny", "--output", "OUT"]])
def test_commands_report_a_raising_plugin_in_one_line(argv, cli_host, capsys, tmp_path):
    from pathlib import Path

    from teacherkit.cli import run

    train = Path(__file__).resolve().parents[2] / "examples" / "domain_b" / "train.json"
    cli_host.register(Raises(), "boomer")
    rc = run([{"TRAIN": str(train), "OUT": str(tmp_path / "run")}.get(a, a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: plugin 'boomer' failed in teacherkit_register_teachers: RuntimeError")
    assert "TEACHERKIT_DISABLE_PLUGINS=boomer" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_plugins_listing_survives_a_raising_declaration(cli_host, capsys):
    from teacherkit.cli import run

    cli_host.register(Raises(), "boomer")
    assert run(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    failed = {f["name"]: f["error"] for f in data["failed"]}
    assert "RuntimeError: declaration exploded" in failed["boomer"]
    assert {p["name"]: p["teachers"] for p in data["plugins"]}["sam"] == [{"name": "sam", "learns_from": "masks"}]


def test_plugin_class_exiting_in_its_constructor_is_skipped():
    class ExitsOnInit:
        def __init__(self):
            raise SystemExit(0)

    manager = ExtensionManager.make_test_instance([_ext("quits", ExitsOnInit), _ext("lines", LineDetector())])
    host = get_plugin_manager(extensions=list(manager))
    assert "lines" in host.plugin_names() and "quits" not in host.plugin_names()
    assert [f.name for f in host.failures] == ["quits"]
    assert "sys.exit(0)" in host.failures[0].error


def _fake_distribution(site, module_source, name="exiting_tk_plugin"):
    """A plugin installed the way pip does it: a package and a .dist-info with the entry point."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(module_source)
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[teacherkit.plugins]\nexiting = {name}\n")


def test_plugin_calling_sys_exit_at_import_is_skipped(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    host = get_plugin_manager()
    assert [f.name for f in host.failures] == ["exiting"]
    assert "sys.exit(0)" in host.failures[0].error
    assert {"dino", "sam"} <= set(host.plugin_names())


@pytest.mark.slow
def test_plugin_calling_sys_exit_at_import_leaves_help_and_version_working(tmp_path):
    import os

    from teacherkit import __version__

    _fake_distribution(tmp_path / "site", "import sys\nsys.exit(0)\n")
    env = {"PYTHONPATH": str(tmp_path / "site") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    version = _run_cli("--version", env_extra=env)
    assert version.returncode == 0 and version.stdout.strip() == f"teacherkit {__version__}"
    assert "'exiting'" in version.stderr and "sys.exit(0)" in version.stderr
    help_text = _run_cli("--help", env_extra=env)
    assert help_text.returncode == 0 and "plugins" in help_text.stdout


# -- built-in defaults: a teacher plugin needs two hooks -----------------------------------


class _DefaultsTeacher:
    def make_preprocessor(self):
        return "own-preprocessor"

    def make_loss(self):
        return "own-loss"


class TwoHookPlugin:
    spec = TeacherSpec(name="two_hooks", learns_from="boxes", config_model=TeacherConfig)

    @hookimpl
    def teacherkit_register_teachers(self):
        return [self.spec]

    @hookimpl
    def teacherkit_load_model(self, teacher, config, dataset_info, workdir):
        return _DefaultsTeacher() if teacher.name == "two_hooks" else None


def test_teacher_plugin_with_two_hooks_gets_its_own_preprocessor_and_loss():
    host = get_plugin_manager(entry_points=False)
    host.register(TwoHookPlugin(), "two")
    spec = host.teacher("two_hooks")
    model = host.load_model(spec, TeacherConfig(), None, None)
    assert host.make_preprocessor(spec, TeacherConfig(), model) == "own-preprocessor"
    assert host.make_loss(spec, TeacherConfig(), model) == "own-loss"

    class Override:
        @hookimpl
        def teacherkit_make_loss(self, teacher, config, model):
            return "override-loss"

    host.register(Override(), "override")  # any plugin answering beats the trylast default
    assert host.make_loss(spec, TeacherConfig(), model) == "override-loss"


def test_teacher_without_its_own_preprocessor_is_still_a_clear_error():
    host = get_plugin_manager(entry_points=False)
    spec = TeacherSpec(name="bare", learns_from="boxes", config_model=TeacherConfig)
    with pytest.raises(PluginError, match="no plugin answered teacherkit_make_preprocessor for teacher 'bare'"):
        host.make_preprocessor(spec, TeacherConfig(), object())


def test_hook_wrappers_are_refused_at_registration():
    class Wraps:
        @hookimpl(wrapper=True)
        def teacherkit_detect_annotations(self, dataset):
            return (yield)

    host = get_plugin_manager(entry_points=False)
    with pytest.raises(PluginError, match="wrappers are not supported"):
        host.register(Wraps(), "wraps")
    assert "wraps" not in host.plugin_names()
