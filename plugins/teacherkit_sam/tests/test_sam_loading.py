"""Loading SAM: tiny preset, local bases, fine-tuning set-ups, hooks, light plugin import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from sam_helpers import make_sample

from teacherkit.data.info import DatasetInfo
from teacherkit.errors import TeacherkitError
from teacherkit_sam import load_sam_with_lora
from teacherkit_sam.config import SamConfig
from teacherkit_sam.loss import SamLoss
from teacherkit_sam.plugin import TEACHER
from teacherkit_sam.preprocess import SamPreprocessor
from teacherkit_sam.teacher import SamTeacher

TINY = {"image_size": 64}


def test_tuning_modes_train_what_they_say():
    full = load_sam_with_lora("tiny", finetune="full", **TINY).parameter_report()
    assert full.trainable == full.total and full.mode == "full"

    lora = load_sam_with_lora("tiny", **TINY).parameter_report()
    assert lora.mode == "lora" and lora.total == full.total
    assert set(lora.detail) == {"vision_encoder.lora", "mask_decoder"}
    # rank 16 on two 32->96 qkv layers: 2 * 16 * (32 + 96)
    assert lora.detail["vision_encoder.lora"] == 2 * 16 * (32 + 96)

    frozen = load_sam_with_lora("tiny", mode="frozen_encoder", **TINY)
    assert frozen.parameter_report().detail == {"mask_decoder": lora.detail["mask_decoder"]}
    assert frozen.uses_cache and not load_sam_with_lora("tiny", **TINY).uses_cache

    both = load_sam_with_lora("tiny", train_decoder="lora", r=4, alpha=8, **TINY).parameter_report()
    assert set(both.detail) == {"vision_encoder.lora", "mask_decoder.lora"}
    assert both.detail["vision_encoder.lora"] == 2 * 4 * (32 + 96)

    frozen_full = load_sam_with_lora("tiny", mode="frozen_encoder", finetune="full", **TINY)
    report = frozen_full.parameter_report()
    assert "vision_encoder" not in report.detail and report.detail["prompt_encoder"] > 0
    assert frozen_full.uses_cache


def test_custom_lora_targets_stay_inside_the_allowed_parts():
    teacher = load_sam_with_lora("tiny", mode="frozen_encoder", train_decoder="lora", target_modules=["out_proj"],
                                 **TINY)
    names = [n for n, p in teacher.model.named_parameters() if p.requires_grad]
    assert names and all("out_proj.lora_" in n and "mask_decoder" in n for n in names)
    with pytest.raises(TeacherkitError, match="target_modules.*no module"):
        load_sam_with_lora("tiny", target_modules=["no_such_layer"], **TINY)


def test_tiny_base_is_deterministic_and_saved_base_reloads_identically(tmp_path):
    a = load_sam_with_lora("tiny", finetune="full", **TINY)
    b = load_sam_with_lora("tiny", finetune="full", **TINY)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    with torch.no_grad():  # training changes the model in place; save_base must still write the base
        for p in a.model.parameters():
            p.add_(1.0)
    a.save_base(tmp_path / "base")
    assert (tmp_path / "base" / "processor_config.json").exists()
    reloaded = load_sam_with_lora(str(tmp_path / "base"), finetune="full", **TINY)
    assert reloaded.settings.size == 64
    for key, value in b.model.state_dict().items():
        assert torch.equal(value, reloaded.model.state_dict()[key]), key
    with pytest.raises(TeacherkitError, match="image_size=128 but the model .* takes 64 px"):
        load_sam_with_lora(str(tmp_path / "base"), image_size=128)


def test_a_base_that_is_not_local_fails_with_instructions(tmp_path):
    with pytest.raises(TeacherkitError, match="facebook/sam-vit-base.*never downloads.*base=tiny"):
        load_sam_with_lora("facebook/sam-vit-base")
    with pytest.raises(TeacherkitError, match="no such directory or file: .*missing"):
        load_sam_with_lora(str(tmp_path / "missing"))


def test_hooks_build_the_teacher_preprocessor_and_loss(plugin_host, tmp_path):
    config = SamConfig(**TINY, base="tiny", focal_weight=5.0)
    teacher = plugin_host.load_model(TEACHER, config, DatasetInfo(), tmp_path)
    assert isinstance(teacher, SamTeacher)
    pre = plugin_host.make_preprocessor(TEACHER, config, teacher)
    loss = plugin_host.make_loss(TEACHER, config, teacher)
    assert isinstance(pre, SamPreprocessor) and pre.image_size == 64 and isinstance(loss, SamLoss)
    assert (loss.focal_weight, loss.resolution) == (config.focal_weight, config.loss_resolution)
    # the plugin has two teacher hooks: the core's trylast defaults ask the teacher for the rest
    for hook in ("teacherkit_make_preprocessor", "teacherkit_make_loss"):
        assert plugin_host.first_result(hook, teacher=TEACHER, config=config, model=teacher)[0] == \
            "builtin-teacher-defaults", hook
    other = type(TEACHER)(name="grounding_dino", learns_from="boxes", config_model=SamConfig)
    from teacherkit_sam import plugin

    assert plugin.teacherkit_load_model(other, config, DatasetInfo(), tmp_path) is None
    assert not hasattr(plugin, "teacherkit_make_preprocessor") and not hasattr(plugin, "teacherkit_make_loss")
    assert plugin_host.teacher("sam") is TEACHER


def test_tiny_preset_and_config_layering():
    assert SamConfig.tiny_preset["finetune"] == "full" and SamConfig.tiny_preset["image_size"] % 8 == 0
    with pytest.raises(ValueError):
        SamConfig(mode="everything")


def test_plugin_module_and_package_import_no_torch():
    code = ("import sys, teacherkit_sam, teacherkit_sam.plugin, teacherkit_sam.config; "
            "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prediction_entries_follow_the_contract():
    import numpy as np

    from teacherkit.data.masks import rle_to_mask

    teacher = load_sam_with_lora("tiny", **TINY)
    masks = np.zeros((3, 50, 70), np.uint8)
    masks[0, 5:20, 5:30] = 1
    masks[2, 30:45, 40:60] = 1  # instance 1 has an empty mask: still answered
    pre = teacher.make_preprocessor()
    batch = pre.collate([pre(make_sample(masks, image_id=7), train=False), pre(make_sample(masks[:1]), train=False)])
    preds = teacher.predict(teacher.model, batch)
    assert [len(p) for p in preds] == [3, 1]
    entry = preds[0][2]
    assert entry["image_id"] == 7 and entry["annotation_id"] == 702 and entry["category_id"] == 3
    assert isinstance(entry["segmentation"]["counts"], str) and entry["segmentation"]["size"] == [50, 70]
    assert rle_to_mask(entry["segmentation"]).shape == (50, 70) and 0.0 <= entry["score"] <= 1.0
