"""The tiny model with LoRA: trainable parameters, forward/backward, adapters, bases, scale."""

from __future__ import annotations

import json
import re

import pytest
import torch
from dino_helpers import batch_for, make_teacher, shapes_info, tuned_lora_teacher

from teacherkit.adapters import AdapterError
from teacherkit.errors import TeacherkitError
from teacherkit_dino import load_grounding_dino_with_lora
from teacherkit_dino.config import DEFAULT_LORA_TARGETS
from teacherkit_dino.loss import GroundingDinoLoss
from teacherkit_dino.modeling import box_head_parameters


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
def test_lora_adapter_round_trip_is_exact_and_only_peft_files(tmp_path):
    teacher = tuned_lora_teacher()
    batch = batch_for(teacher)
    tuned = logits_of(teacher, batch)
    teacher.save_adapter(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    # every trained weight is in peft's own files: the box head as modules_to_save
    assert files == {"adapter_config.json", "adapter_model.safetensors", "teacherkit_adapter.json", "README.md"}
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["modules_to_save"]) == ["bbox_embed.0", "bbox_embed.1"]
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "square" in card and "load_adapter" in card and "PeftModel.from_pretrained" in card

    fresh = make_teacher(shapes_info(), finetune="lora")
    assert not torch.equal(logits_of(fresh, batch), tuned)
    fresh.load_adapter(tmp_path / "adapter")
    assert torch.equal(logits_of(fresh, batch), tuned)
    # the head and the decoder's refinement copy stay one set of weights after loading
    hf = fresh.hf_model
    head = hf.bbox_embed[0].modules_to_save["default"]
    assert head is hf.model.decoder.bbox_embed[0].modules_to_save["default"]
    assert head is hf.bbox_embed[1].modules_to_save["default"]  # one head for every layer, as in the base


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_plain_peft_on_transformers_class_reproduces_predictions(tmp_path):
    from transformers import GroundingDinoForObjectDetection

    from teacherkit_dino import load_adapter

    teacher = tuned_lora_teacher()
    batch = batch_for(teacher)
    teacher.model.eval()
    with torch.no_grad():
        expected = teacher.forward(teacher.model, batch)
    teacher.save_adapter(tmp_path / "adapter")
    teacher.save_base(tmp_path / "base")
    base = GroundingDinoForObjectDetection.from_pretrained(tmp_path / "base")
    assert type(base) is GroundingDinoForObjectDetection
    model = load_adapter(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        got = teacher.forward(model, batch)
    assert torch.equal(got["logits"], expected["logits"])
    assert torch.equal(got["pred_boxes"], expected["pred_boxes"])


def write_legacy_adapter(teacher, directory):
    """The layout of earlier versions: LoRA-only peft files, the box head beside them."""
    from safetensors.torch import save_file

    from teacherkit.adapters import wrap_with_lora
    from teacherkit_dino.modeling import TEXT_EMBEDDINGS

    plain = wrap_with_lora(make_teacher(shapes_info(), finetune="full").hf_model, teacher.config.lora,
                           target_modules=DEFAULT_LORA_TARGETS, input_embeddings=TEXT_EMBEDDINGS)
    lora = {k: v for k, v in teacher.model.state_dict().items() if "lora_" in k}
    assert not plain.load_state_dict(lora, strict=False).unexpected_keys
    plain.save_pretrained(str(directory))
    head = {n: p.detach().contiguous() for n, p in box_head_parameters(teacher.hf_model).items()}
    save_file(head, str(directory / "box_head.safetensors"))
    (directory / "teacherkit_adapter.json").write_text(json.dumps({
        "teacher": "grounding_dino", "finetune": "lora", "base": "tiny", "train_box_head": True,
        "lora": teacher.config.lora.model_dump(), "class_names": ["square", "triangle", "circle"],
        "category_ids": [0, 3, 7]}))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_adapter_of_the_earlier_layout_still_loads(tmp_path):
    from transformers import GroundingDinoForObjectDetection

    from teacherkit_dino import load_adapter

    teacher = tuned_lora_teacher()
    batch = batch_for(teacher)
    tuned = logits_of(teacher, batch)
    write_legacy_adapter(teacher, tmp_path / "old")
    fresh = make_teacher(shapes_info(), finetune="lora")
    fresh.load_adapter(tmp_path / "old")
    assert torch.equal(logits_of(fresh, batch), tuned)
    # saving again writes the standard layout (the conversion the docs describe)
    fresh.save_adapter(tmp_path / "new")
    assert not (tmp_path / "new" / "box_head.safetensors").exists()
    teacher.save_base(tmp_path / "base")
    plain = load_adapter(GroundingDinoForObjectDetection.from_pretrained(tmp_path / "base"), tmp_path / "old")
    with torch.no_grad():
        assert torch.equal(teacher.forward(plain.eval(), batch)["logits"], tuned)
    with pytest.raises(AdapterError, match="train_box_head=true"):
        make_teacher(shapes_info(), finetune="lora", train_box_head=False).load_adapter(tmp_path / "old")


def test_lora_mismatch_names_the_folder_and_the_difference(tmp_path):
    make_teacher(shapes_info(), finetune="lora", lora={"r": 4, "alpha": 8}).save_adapter(tmp_path / "r4")
    with pytest.raises(AdapterError, match=r"r4: adapter does not fit.*r=4 in the folder, r=8 in the model"):
        make_teacher(shapes_info(), finetune="lora", lora={"r": 8, "alpha": 8}).load_adapter(tmp_path / "r4")
    with pytest.raises(AdapterError, match="modules_to_save"):
        make_teacher(shapes_info(), finetune="lora", lora={"r": 4, "alpha": 8},
                     train_box_head=False).load_adapter(tmp_path / "r4")
    with pytest.raises(AdapterError, match="not a teacherkit Grounding DINO adapter"):
        make_teacher(shapes_info(), finetune="lora").load_adapter(tmp_path)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_unfrozen_backbone_is_saved_in_the_adapter(tmp_path):
    teacher = tuned_lora_teacher(freeze_backbone=False)
    batch = batch_for(teacher)
    tuned = logits_of(teacher, batch)
    teacher.save_adapter(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert "model.backbone" in config["modules_to_save"]
    fresh = make_teacher(shapes_info(), finetune="lora", freeze_backbone=False)
    fresh.load_adapter(tmp_path / "adapter")
    assert torch.equal(logits_of(fresh, batch), tuned)


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
    with pytest.raises(AdapterError, match="trained with finetune 'full'.*has finetune 'lora'"):
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
