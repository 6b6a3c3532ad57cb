"""Grounding DINO's real default base (IDEA-Research/grounding-dino-tiny) from a folder or
the local Hugging Face cache, offline; a missing base stops at once with how to provide
it; IDEA's original .pth files are recognised and answered; ``teacherkit convert`` names them."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from huggingface_hub import constants

from teacherkit.config import resolve_config
from teacherkit.data.info import DatasetInfo
from teacherkit.plugins import get_plugin_manager
from teacherkit_dino import plugin
from teacherkit_dino.config import DEFAULT_BASE, GroundingDinoConfig, TinyArchitecture
from teacherkit_dino.convert import DinoBaseError, check_base
from teacherkit_dino.modeling import build_tiny_base, save_base

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CLASSES = ["square", "circle"]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache, whatever this machine has."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def load_teacher(**settings):
    config = GroundingDinoConfig(shortest_edge=64, longest_edge=96, **settings)
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}]
    info = DatasetInfo(annotation_kinds=["boxes"], categories=categories, class_names=CLASSES,
                       class_mapping={1: 0, 2: 1}, source="test.json")
    return plugin.teacherkit_load_model(teacher=plugin.TEACHER, config=config, dataset_info=info, workdir=None)


def saved_tiny(folder):
    save_base(build_tiny_base(CLASSES, TinyArchitecture(), 256), folder)
    return folder


def test_the_default_is_the_real_model_and_tiny_is_only_when_named():
    model = get_plugin_manager().config_model()
    assert GroundingDinoConfig().base == DEFAULT_BASE == "IDEA-Research/grounding-dino-tiny"
    assert resolve_config(model).teacher("grounding_dino").base == DEFAULT_BASE
    tiny = resolve_config(model, preset="tiny").teacher("grounding_dino")
    assert tiny.base == "tiny" and check_base(tiny).random_weights


def test_a_missing_default_stops_at_once_naming_model_place_and_both_remedies(hub_cache, monkeypatch):
    import transformers

    def no_model(*_args, **_kwargs):
        raise AssertionError("check_base built or loaded a model to find the base")

    # "at once": nothing is built or loaded to find out (the time it takes is not asserted)
    monkeypatch.setattr(transformers.GroundingDinoForObjectDetection, "__init__", no_model)
    monkeypatch.setattr(transformers.GroundingDinoForObjectDetection, "from_pretrained", no_model)
    with pytest.raises(DinoBaseError) as err:
        check_base(GroundingDinoConfig())
    message = str(err.value)
    for part in ("IDEA-Research/grounding-dino-tiny", str(hub_cache), "hf download IDEA-Research/grounding-dino-tiny",
                 "--set teachers.grounding_dino.base=DIR", "--preset tiny"):
        assert part in message, part
    assert "FILE.pth" in message  # IDEA's original checkpoints convert (teacherkit convert)
    assert err.value.exit_code == 2
    with pytest.raises(DinoBaseError, match="not in the local Hugging Face cache"):
        load_teacher()
    with pytest.raises(DinoBaseError, match="the model IDEA-Research/grounding-dino-base is not"):
        check_base(GroundingDinoConfig(base="grounding-dino-base"))


def test_a_saved_folder_and_a_cached_hub_id_load_offline(tmp_path, hub_cache):
    folder = saved_tiny(tmp_path / "base")
    assert check_base(GroundingDinoConfig(base=str(folder))).kind == "folder"
    from_folder = load_teacher(base=str(folder), finetune="full")

    repo = hub_cache / "models--IDEA-Research--grounding-dino-tiny"
    shutil.copytree(folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    location = check_base(GroundingDinoConfig(base="grounding-dino-tiny"))
    assert location.kind == "cache" and not location.random_weights
    from_cache = load_teacher(finetune="full")  # the default base, from the cache
    expected = from_folder.hf_model.state_dict()
    for key, value in from_cache.hf_model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_folders_that_are_not_grounding_dino_are_named(tmp_path):
    folder = saved_tiny(tmp_path / "base")
    (folder / "vocab.txt").unlink(missing_ok=True)
    (folder / "tokenizer.json").unlink(missing_ok=True)
    with pytest.raises(DinoBaseError, match="has no tokenizer"):
        check_base(GroundingDinoConfig(base=str(folder)))
    (tmp_path / "sam").mkdir()
    (tmp_path / "sam" / "config.json").write_text('{"model_type": "sam"}')
    (tmp_path / "sam" / "model.safetensors").write_bytes(b"")
    with pytest.raises(DinoBaseError, match="is a 'sam' model, not Grounding DINO"):
        check_base(GroundingDinoConfig(base=str(tmp_path / "sam")))
