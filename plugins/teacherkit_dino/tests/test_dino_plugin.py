"""The plugin through the core's hooks: discovery, two teacher hooks (the preprocessor and
the loss come from the teacher through the core's defaults), answers only for its
teacher, light import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dino_helpers import shapes_info

from teacherkit.teachers import TeacherSpec
from teacherkit_dino.config import GroundingDinoConfig
from teacherkit_dino.loss import GroundingDinoLoss
from teacherkit_dino.preprocess import GroundingDinoPreprocessor
from teacherkit_dino.teacher import GroundingDinoTeacher

HOOKS = ["teacherkit_check_base", "teacherkit_load_model", "teacherkit_register_commands",
         "teacherkit_register_teachers"]


def test_hooks_build_teacher_preprocessor_and_loss(plugin_host):
    spec = plugin_host.teacher("grounding_dino")
    assert spec.learns_from == "boxes" and spec.config_model is GroundingDinoConfig
    config = GroundingDinoConfig(base="tiny", shortest_edge=64, longest_edge=64)
    teacher = plugin_host.load_model(spec, config, shapes_info(), None)
    assert isinstance(teacher, GroundingDinoTeacher)
    assert isinstance(plugin_host.make_preprocessor(spec, config, teacher), GroundingDinoPreprocessor)
    assert isinstance(plugin_host.make_loss(spec, config, teacher), GroundingDinoLoss)
    # both come from the core's trylast defaults, which ask the teacher
    for hook in ("teacherkit_make_preprocessor", "teacherkit_make_loss"):
        answered_by, _ = plugin_host.first_result(hook, teacher=spec, config=config, model=teacher)
        assert answered_by == "builtin-teacher-defaults", hook


def test_hooks_answer_none_for_other_teachers():
    from teacherkit_dino import plugin

    other = TeacherSpec(name="sam", learns_from="masks", config_model=GroundingDinoConfig)
    config = GroundingDinoConfig()
    assert plugin.teacherkit_load_model(teacher=other, config=config, dataset_info=shapes_info(), workdir=None) is None
    assert not hasattr(plugin, "teacherkit_make_preprocessor") and not hasattr(plugin, "teacherkit_make_loss")


def test_tiny_preset_changes_this_section():
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager

    config = resolve_config(get_plugin_manager().config_model(), preset="tiny")
    section = config.teacher("grounding_dino")
    assert (section.base, section.finetune, section.shortest_edge) == ("tiny", "full", 128)


@pytest.mark.slow
def test_cli_lists_hooks_and_plugin_import_stays_light():
    cli = Path(sys.executable).with_name("teacherkit")
    out = subprocess.run([str(cli), "plugins", "--json"], capture_output=True, text=True, check=True)
    dino = next(p for p in json.loads(out.stdout)["plugins"] if p["module"] == "teacherkit_dino.plugin")
    assert dino["hooks"] == HOOKS
    assert dino["teachers"] == [{"name": "grounding_dino", "learns_from": "boxes"}]
    code = ("import sys, teacherkit_dino, teacherkit_dino.plugin; "
            "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))")
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "[]"
