"""The tiny model with LoRA: trainable parameters, forward/backward, adapters, bases, scale."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from dino_helpers import make_teacher, random_sample, shapes_info

from teacherkit.errors import TeacherkitError
from teacherkit_dino import load_grounding_dino_with_lora
from teacherkit_dino.config import DEFAULT_LORA_TARGETS
from teacherkit_dino.loss import GroundingDinoLoss
from teacherkit_dino.modeling import box_head_parameters


def batch_for(teacher, seed=0, n=2):
    pre = teacher.make_preprocessor()
    rng = np.random.default_rng(seed)
    return pre.collate([pre(random_sample(rng, i + 1, [i % 3, 2]), train=False) for i in range(n)])


def logits_of(teacher, batch):
    teacher.model.eval()
    with torch.no_grad():
        return teacher.forward(teacher.model, batch)["logits"].clone()


def expected_lora_count(r: int) -> int:
    """r × (in + out) for every Linear the default targets name, counted on a plain model."""
    model = make_teacher(shapes_info(), finetune="full").hf_model
    pattern = re.compile(DEFAULT_LORA_TARGETS)
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name))


@pytest.mark.parametrize("train_box_head", [True, False])
def test_lora_trains_only_adapters_and_box_head(train_box_head):
    teacher = make_teacher(shapes_info(), finetune="lora", train_box_head=train_box_head, lora={"r": 4, "alpha": 8})
    lora = expected_lora_count(4)
    head = sum(p.numel() for p in box_head_parameters(teacher.hf_model).values()) if train_box_head else 0
    report = teacher.parameter_report()
    assert lora > 0
    assert report.trainable == lora + head
    assert report.detail.get("lora") == lora and report.detail.get("box_head", 0) == head
    assert report.total > 10 * report.trainable and report.mode == "lora"
    # 4 Linear layers per attention block × 2 attentions + 4 deformable + 2 FFN, per decoder layer.
    wrapped = [n for n, _ in teacher.model.named_modules() if n.endswith("lora_A")]
    assert len(wrapped) == 14 * teacher.hf_model.config.decoder_layers

    batch = batch_for(teacher)
    teacher.model.train()
    out = teacher.forward(teacher.model, batch)
    GroundingDinoLoss.from_model_config(teacher.hf_model.config)(out, batch)["loss"].backward()
    for name, param in teacher.model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name
    # The box head is tied to the decoder's refinement copy: training one trains both.
    hf = teacher.hf_model
    assert hf.bbox_embed[0].layers[0].weight is hf.model.decoder.bbox_embed[0].layers[0].weight


def test_full_mode_trains_everything():
    teacher = make_teacher(shapes_info(), finetune="full")
    report = teacher.parameter_report()
    assert report.mode == "full"
    # Everything but Swin's final layer norm, which Grounding DINO never uses.
    swin_norm = sum(p.numel() for p in teacher.hf_model.model.backbone.conv_encoder.model.swin.layernorm.parameters())
    assert report.trainable == report.total - swin_norm > 0.99 * report.total


def test_get_input_embeddings_is_the_text_word_embeddings():
    teacher = make_teacher(shapes_info(), finetune="lora")
    emb = teacher.model.get_input_embeddings()
    assert emb is teacher.hf_model.model.text_backbone.embeddings.word_embeddings


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_adapter_round_trip_is_exact(tmp_path):
    teacher = make_teacher(shapes_info(), finetune="lora")
    batch = batch_for(teacher)
    with torch.no_grad():  # stand in for training: move every trainable weight
        for p in teacher.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    tuned = logits_of(teacher, batch)
    teacher.save_adapter(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "box_head.safetensors"} <= files

    fresh = make_teacher(shapes_info(), finetune="lora")
    assert not torch.equal(logits_of(fresh, batch), tuned)
    fresh.load_adapter(tmp_path / "adapter")
    assert torch.equal(logits_of(fresh, batch), tuned)

    # The adapter is plain PEFT: peft loads it onto the base by itself.
    from peft import PeftModel

    base = make_teacher(shapes_info(), finetune="full").hf_model
    plain = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    lora_keys = {k for k in plain.state_dict() if "lora_" in k}
    assert lora_keys and all(torch.equal(plain.state_dict()[k], fresh.model.state_dict()[k]) for k in lora_keys)


def test_full_adapter_round_trip_and_mode_mismatch(tmp_path):
    teacher = make_teacher(shapes_info(), finetune="full")
    batch = batch_for(teacher)
    with torch.no_grad():
        for p in teacher.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    tuned = logits_of(teacher, batch)
    teacher.save_adapter(tmp_path / "full")
    fresh = make_teacher(shapes_info(), finetune="full")
    fresh.load_adapter(tmp_path / "full")
    assert torch.equal(logits_of(fresh, batch), tuned)
    with pytest.raises(TeacherkitError, match="finetune='full'"):
        make_teacher(shapes_info(), finetune="lora").load_adapter(tmp_path / "full")


def test_saved_tiny_base_reloads_identically(tmp_path):
    teacher = make_teacher(shapes_info(), finetune="full")
    batch = batch_for(teacher)
    before = logits_of(teacher, batch)
    with torch.no_grad():  # training in place must not leak into the saved base
        next(teacher.model.parameters()).add_(1.0)
    teacher.save_base(tmp_path / "base")
    assert (tmp_path / "base" / "tokenizer.json").is_file()
    reloaded = make_teacher(shapes_info(), finetune="full", base=str(tmp_path / "base"))
    assert reloaded.tokenizer.convert_tokens_to_ids("[SEP]") == 102
    assert torch.equal(logits_of(reloaded, batch), before)


def test_adapter_scale_zero_is_the_base_and_one_the_tuned():
    teacher = make_teacher(shapes_info(), finetune="lora")
    batch = batch_for(teacher)
    base = logits_of(teacher, batch)
    with torch.no_grad():
        for p in teacher.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    tuned = logits_of(teacher, batch)
    teacher.set_adapter_scale(0.0)
    torch.testing.assert_close(logits_of(teacher, batch), base)
    teacher.set_adapter_scale(0.5)
    half = logits_of(teacher, batch)
    assert not torch.allclose(half, base) and not torch.allclose(half, tuned)
    teacher.set_adapter_scale(1.0)
    assert torch.equal(logits_of(teacher, batch), tuned)


def test_missing_base_gives_instructions(tmp_path):
    with pytest.raises(TeacherkitError) as err:
        make_teacher(shapes_info(), base=str(tmp_path / "nowhere"))
    assert "no such directory" in str(err.value) and "hf download" in str(err.value)
    with pytest.raises(TeacherkitError, match="not in the local Hugging Face cache"):
        make_teacher(shapes_info(), base="someone/grounding-dino-not-cached")


def test_seed_api_returns_a_lora_teacher():
    teacher = load_grounding_dino_with_lora("tiny", 2, {"r": 8, "alpha": 16}, class_names=["cat", "dog"])
    assert teacher.parameter_report().detail["lora"] == expected_lora_count(8)
    assert teacher.prompts.text(teacher.prompts.full) == "cat . dog ."
