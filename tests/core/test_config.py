"""Config layering, unknown keys, --set parsing and YAML round trips."""

from __future__ import annotations

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
