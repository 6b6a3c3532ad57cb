"""SAM's real default base: facebook/sam-vit-base from a folder or the local Hugging Face
cache, offline; a missing base stops at once with how to provide it; random weights only
when named (``tiny``)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from huggingface_hub import constants

from teacherkit.config import resolve_config
from teacherkit.plugins import get_plugin_manager
from teacherkit_sam import load_sam_with_lora
from teacherkit_sam.config import DEFAULT_BASE, SamConfig
from teacherkit_sam.loading import SamLoadError, check_base, load_base

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache, whatever this machine has."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_hub_cache(cache, repo_id, folder):
    """Lay ``folder`` out as ``hf download repo_id`` leaves it in the cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")


def test_the_default_is_the_real_model_and_tiny_is_only_when_named():
    model = get_plugin_manager().config_model()
    assert SamConfig().base == DEFAULT_BASE == "facebook/sam-vit-base"
    assert resolve_config(model).teacher("sam").base == DEFAULT_BASE
    tiny = resolve_config(model, preset="tiny").teacher("sam")
    assert tiny.base == "tiny" and check_base(tiny).random_weights


def test_a_missing_default_stops_at_once_naming_model_place_and_both_remedies(hub_cache, monkeypatch):
    import transformers

    def no_model(*_args, **_kwargs):
        raise AssertionError("check_base built or loaded a model to find the base")

    # "at once": nothing is built or loaded to find out (the time it takes is not asserted)
    monkeypatch.setattr(transformers.SamModel, "__init__", no_model)
    monkeypatch.setattr(transformers.SamModel, "from_pretrained", no_model)
    with pytest.raises(SamLoadError) as err:
        check_base(SamConfig())
    message = str(err.value)
    for part in ("facebook/sam-vit-base", str(hub_cache), "hf download facebook/sam-vit-base",
                 "--set teachers.sam.base=DIR", "--set teachers.sam.base=FILE.pth", "--preset tiny"):
        assert part in message, part
    assert err.value.exit_code == 2
    with pytest.raises(SamLoadError, match="facebook/sam-vit-base is not in the local Hugging Face cache"):
        load_base(SamConfig())


@pytest.mark.parametrize("name, repo_id", [("sam-vit-large", "facebook/sam-vit-large"),
                                           ("sam-vit-huge", "facebook/sam-vit-huge"),
                                           ("facebook/sam-vit-base", "facebook/sam-vit-base")])
def test_the_larger_models_by_name(hub_cache, name, repo_id):
    with pytest.raises(SamLoadError, match=f"the model {repo_id} is not in the local Hugging Face cache"):
        check_base(SamConfig(base=name))


def test_a_saved_folder_and_a_cached_hub_id_load_offline(tmp_path, hub_cache):
    tiny = load_sam_with_lora("tiny", image_size=64, finetune="full")
    tiny.save_base(tmp_path / "base")
    from_folder = load_sam_with_lora(str(tmp_path / "base"), image_size=64, finetune="full")
    assert check_base(SamConfig(base=str(tmp_path / "base"), image_size=64)).kind == "folder"

    put_in_hub_cache(hub_cache, "facebook/sam-vit-base", tmp_path / "base")
    location = check_base(SamConfig(base="sam-vit-base", image_size=64))
    assert location.kind == "cache" and not location.random_weights
    from_cache = load_sam_with_lora("facebook/sam-vit-base", image_size=64, finetune="full")
    expected = from_folder.model.state_dict()
    for key, value in from_cache.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    # the size check happens before loading, too
    with pytest.raises(SamLoadError, match="image_size=1024 but the model .* takes 64 px"):
        check_base(SamConfig())


def test_a_folder_without_weights_or_of_another_model_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SamLoadError, match="has no config.json and model weights"):
        check_base(SamConfig(base=str(tmp_path / "empty")))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "other" / "model.safetensors").write_bytes(b"")
    with pytest.raises(SamLoadError, match="a 'bert' model, not SAM"):
        check_base(SamConfig(base=str(tmp_path / "other")))
    with pytest.raises(SamLoadError, match="no such directory or file"):
        check_base(SamConfig(base=str(tmp_path / "nowhere")))
