"""Config layering, unknown keys, --set parsing and YAML round trips."""

from __future__ import annotations

import re

import pytest

from teacherkit.config import (
    ConfigError,
    describe_fields,
    load_config_yaml,
    parse_set,
    resolve_config,
)


@pytest.fixture
def model(plugin_host):
    return plugin_host.config_model()


def test_defaults_come_from_every_installed_teacher(model):
    cfg = resolve_config(model)
    assert cfg.teachers.grounding_dino.lora.r == 16
    assert cfg.teachers.grounding_dino.shortest_edge == 800
    assert cfg.teachers.sam.focal_weight == 20.0
    assert cfg.training.epochs == 10


def test_layers_apply_in_order(model, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("training:\n  epochs: 3\n  lr: 0.001\nteachers:\n  sam:\n    lora:\n      r: 4\n")
    cfg = resolve_config(
        model,
        dataset_facts={"training": {"epochs": 99, "batch_size": 7}},
        preset="tiny",
        config_file=cfg_file,
        cli={"training": {"lr": 0.5}},
        sets=["teachers.sam.lora.r=8", "augmentation.characteristics=[rigid, symmetric]"],
    )
    assert cfg.training.epochs == 3  # file beats dataset facts
    assert cfg.training.batch_size == 7  # dataset fact survives where nothing overrides it
    assert cfg.training.lr == 0.5  # CLI flag beats file
    assert cfg.teachers.sam.lora.r == 8  # --set beats file
    assert cfg.teachers.sam.lora.alpha == 32  # nested defaults kept
    assert cfg.teachers.grounding_dino.base == "tiny" and cfg.teachers.grounding_dino.finetune == "full"  # preset
    assert cfg.teachers.grounding_dino.shortest_edge == 128
    assert cfg.augmentation.characteristics == ["rigid", "symmetric"]
    assert cfg.experiment.preset == "tiny"


def test_preset_can_come_from_the_config_file(model, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("experiment:\n  preset: tiny\nteachers:\n  sam:\n    image_size: 64\n")
    cfg = resolve_config(model, config_file=cfg_file)
    assert cfg.teachers.sam.base == "tiny" and cfg.teachers.sam.image_size == 64


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["training.epoks=3"], "unknown key 'training.epoks'; did you mean training.epochs"),
        (["trainig.lr=1"], "unknown key 'trainig'; did you mean training"),
        (["teachers.sam.lora.rank=4"], "unknown key 'teachers.sam.lora.rank'"),
        (["teachers.grounding_dino.bsae=x"], "did you mean teachers.grounding_dino.base"),
        (["teachers.dino.base=x"], "valid here: teachers."),
    ],
)
def test_unknown_keys_name_the_key_and_closest_valid_ones(model, sets, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        resolve_config(model, sets=sets)


def test_unknown_key_in_file_names_the_file(model, tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("training:\n  batchsize: 2\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(model, config_file=cfg_file)
    assert str(cfg_file) in str(err.value) and "training.batch_size" in str(err.value)


def test_invalid_values_are_reported_with_their_key(model):
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        resolve_config(model, sets=["training.epochs=0"])
    with pytest.raises(ConfigError, match=r"teachers\.grounding_dino\.finetune"):
        resolve_config(model, sets=["teachers.grounding_dino.finetune=half"])


def test_bad_set_syntax_and_bad_yaml(model, tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["training.lr"])
    with pytest.raises(ConfigError, match="empty key part"):
        parse_set(["training..lr=1"])
    bad = tmp_path / "x.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        resolve_config(model, config_file=bad)
    listy = tmp_path / "l.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        resolve_config(model, config_file=listy)
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(model, config_file=tmp_path / "missing.yaml")


def test_parse_set_types():
    assert parse_set(["a.b=3", "a.c=true", "d=[1, 2]", "e=hello", "f=1e-4"]) == {
        "a": {"b": 3, "c": True}, "d": [1, 2], "e": "hello", "f": 1e-4,
    }


def test_yaml_round_trip_is_identical(model, tmp_path):
    cfg = resolve_config(model, preset="tiny", sets=["training.lr=3e-4",
                                                     "augmentation.environment={lighting: variable}",
                                                     "teachers.sam.lora.target_modules=[qkv]"])
    path = tmp_path / "teacher_config.yaml"
    cfg.save(path)
    again = load_config_yaml(model, path)
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()
    # and the saved file is a valid --config input that reproduces the run
    assert resolve_config(model, config_file=path) == cfg


def test_every_field_has_a_description(model):
    rows = describe_fields(model)
    assert len(rows) > 40
    missing = [key for key, _t, _d, help_text in rows if not help_text]
    assert missing == []


# -- every float is finite -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["training.lr=inf"], "training.lr"),
        (["training.lr=.inf"], "training.lr"),
        (["training.lr=nan"], "training.lr"),
        (["training.lr=-.inf"], "training.lr"),
        (["training.grad_clip=.nan"], "training.grad_clip"),
        (["checkpointing.min_delta=inf"], "checkpointing.min_delta"),
        (["training.replay.fraction=inf"], "training.replay.fraction"),
        (["teachers.sam.focal_weight=inf"], "teachers.sam.focal_weight"),
        (["teachers.grounding_dino.lr=nan"], "teachers.grounding_dino.lr"),
        (["teachers.sam.lora.dropout=nan"], "teachers.sam.lora.dropout"),
    ],
)
def test_non_finite_floats_are_refused_naming_the_key(model, sets, key):
    with pytest.raises(ConfigError, match=re.escape(key) + ".*finite"):
        resolve_config(model, sets=sets)


def test_non_finite_floats_in_a_file_and_in_a_plugin_sub_model_are_refused(model, tmp_path):
    from pydantic import BaseModel, Field

    from teacherkit.config import TeacherConfig, build_config_model

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("training:\n  weight_decay: .inf\n")
    with pytest.raises(ConfigError, match=r"training\.weight_decay.*finite"):
        resolve_config(model, config_file=cfg_file)

    class Schedule(BaseModel):  # a plugin's own sub-model, not a teacherkit section
        gamma: float = Field(0.5, description="decay")

    class Custom(TeacherConfig):
        schedule: Schedule = Field(default_factory=Schedule, description="schedule")

    with pytest.raises(ConfigError, match=r"teachers\.custom\.schedule\.gamma: must be a finite number"):
        resolve_config(build_config_model({"custom": Custom}), sets=["teachers.custom.schedule.gamma=inf"])
    saved = tmp_path / "saved.yaml"
    saved.write_text("teachers:\n  custom:\n    schedule:\n      gamma: .nan\n")
    with pytest.raises(ConfigError, match=re.escape(str(saved))):
        load_config_yaml(build_config_model({"custom": Custom}), saved)


def test_cli_refuses_a_non_finite_lr_with_exit_2(tmp_path, capsys):
    from teacherkit.cli import run

    out = tmp_path / "x"
    assert run(["train", "--data", str(tmp_path / "t.json"), "--output", str(out), "--set", "training.lr=inf"]) == 2
    err = capsys.readouterr().err
    assert "training.lr" in err and "finite" in err and "Traceback" not in err
    assert run(["train", "--data", str(tmp_path / "t.json"), "--output", str(out), "--lr", "nan"]) == 2
    assert "training.lr" in capsys.readouterr().err
    assert not out.exists()


# -- command-line flags ----------------------------------------------------------------------


def _train_config(model, *, training=None, lora_r=None, preset=None, config_file=None, sets=()):
    from teacherkit.training.commands import resolve_train_config

    return resolve_train_config(model, training=training or {}, lora_r=lora_r, preset=preset,
                                config_file=config_file, sets=list(sets))


def test_a_flag_beats_a_per_teacher_value_from_the_file(model, tmp_path):
    from teacherkit.training.settings import LoopSettings

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("teachers:\n  sam:\n    epochs: 12\n    lr: 0.5\n  grounding_dino:\n    batch_size: 9\n")
    from_file = _train_config(model, config_file=cfg_file)
    assert from_file.teachers.sam.epochs == 12  # without a flag the file's per-teacher value holds
    cfg = _train_config(model, training={"epochs": 2, "batch_size": 3}, config_file=cfg_file)
    sam = type("Spec", (), {"name": "sam", "primary_metric": "loss", "metric_mode": "min"})
    settings = LoopSettings.from_config(cfg, sam)
    assert (settings.epochs, settings.lr) == (2, 0.5)  # --epochs wins; lr had no flag
    assert cfg.teachers.grounding_dino.batch_size is None and cfg.training.batch_size == 3
    # --set is above the flags
    cfg = _train_config(model, training={"epochs": 2}, config_file=cfg_file, sets=["teachers.sam.epochs=5"])
    assert cfg.teachers.sam.epochs == 5


def test_lora_r_applies_only_to_teachers_that_fine_tune_with_lora(model, tmp_path):
    cfg = _train_config(model, lora_r=4)
    assert cfg.teachers.sam.lora.r == 4 and cfg.teachers.grounding_dino.lora.r == 4
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("teachers:\n  sam:\n    finetune: lora\n")
    cfg = _train_config(model, lora_r=4, preset="tiny", config_file=cfg_file)  # tiny: full fine-tuning
    assert cfg.teachers.grounding_dino.finetune == "full" and cfg.teachers.grounding_dino.lora.r == 16
    assert cfg.teachers.sam.finetune == "lora" and cfg.teachers.sam.lora.r == 4
    cfg = _train_config(model, lora_r=4, sets=["teachers.sam.lora.r=2"])
    assert cfg.teachers.sam.lora.r == 2 and cfg.teachers.grounding_dino.lora.r == 4


def test_lora_r_with_no_lora_teacher_says_so(model, capfd, tmp_path):
    # every installed teacher (an installed third-party plugin's too) set to full fine-tuning
    names = list(model.model_fields["teachers"].annotation.model_fields)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("teachers:\n" + "".join(f"  {n}:\n    finetune: full\n" for n in names))
    # capfd, not capsys: click may hold on to the stderr stream of an earlier test in the
    # same worker process, and capfd sees what reaches file descriptor 2 either way
    cfg = _train_config(model, lora_r=4, config_file=cfg_file)
    assert all(cfg.teacher(n).lora.r == 16 for n in ("sam", "grounding_dino"))
    assert "--lora-r: no teacher fine-tunes with LoRA" in capfd.readouterr().err


# -- dataset facts -----------------------------------------------------------------------------


def test_dataset_facts_are_recorded_in_the_saved_config(model, tmp_path):
    from types import SimpleNamespace

    from teacherkit.config import dataset_facts, with_dataset_facts

    info = SimpleNamespace(num_classes=2, class_names=["cat", "dog"])
    cfg = with_dataset_facts(resolve_config(model), info)
    assert cfg.dataset.num_classes == 2 and cfg.dataset.class_names == ["cat", "dog"]
    path = tmp_path / "teacher_config.yaml"
    cfg.save(path)
    assert "class_names:\n  - cat\n  - dog" in path.read_text()
    assert load_config_yaml(model, path) == cfg
    assert resolve_config(model, dataset_facts=dataset_facts(info)).dataset == cfg.dataset
