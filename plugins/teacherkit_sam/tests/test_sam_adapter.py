"""Adapters: PEFT-format round trips with identical outputs, mismatch errors, scaling."""

from __future__ import annotations

import json

import pytest
import torch
from sam_helpers import train_steps

from teacherkit.errors import TeacherkitError
from teacherkit_sam import load_sam_with_lora

SETUPS = {
    "lora": {},
    "lora+decoder-lora": {"train_decoder": "lora"},
    "decoder-only": {"mode": "frozen_encoder"},
    "full": {"finetune": "full"},
}


def _outputs(teacher, batch):
    teacher.model.eval()
    with torch.no_grad():
        return teacher.forward(teacher.model, batch)


def _eval_batch(teacher, samples):
    pre = teacher.make_preprocessor()
    return pre.collate([pre(s, train=False) for s in samples])


@pytest.mark.parametrize("setup", list(SETUPS))
def test_adapter_round_trip_gives_identical_outputs(setup, shapes_samples, tmp_path):
    kwargs = {"image_size": 64, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None}, **SETUPS[setup]}
    trained = load_sam_with_lora("tiny", **kwargs)
    assert trained.mode == setup
    train_steps(trained, shapes_samples[:2], steps=2, lr=1e-2)
    batch = _eval_batch(trained, shapes_samples)
    expected = _outputs(trained, batch)
    trained.save_adapter(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    if setup.startswith("lora"):
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4
    elif setup == "full":
        assert {"config.json", "model.safetensors"} <= files

    fresh = load_sam_with_lora("tiny", **kwargs)
    before = _outputs(fresh, batch)
    assert not torch.equal(before["pred_masks"], expected["pred_masks"])  # training changed something
    fresh.load_adapter(tmp_path / "adapter")
    after = _outputs(fresh, batch)
    assert torch.equal(after["pred_masks"], expected["pred_masks"])
    assert torch.equal(after["iou_scores"], expected["iou_scores"])


def test_trainable_state_dict_round_trip(shapes_samples):
    trained = load_sam_with_lora("tiny", image_size=64)
    train_steps(trained, shapes_samples[:2], steps=1, lr=1e-2)
    fresh = load_sam_with_lora("tiny", image_size=64)
    fresh.load_trainable_state_dict(trained.trainable_state_dict())
    batch = _eval_batch(trained, shapes_samples[:2])
    assert torch.equal(_outputs(fresh, batch)["pred_masks"], _outputs(trained, batch)["pred_masks"])


def test_loading_an_adapter_into_a_different_setup_is_refused(tmp_path):
    load_sam_with_lora("tiny", image_size=64, r=4).save_adapter(tmp_path / "r4")
    with pytest.raises(TeacherkitError, match="r=4.*r=8"):
        load_sam_with_lora("tiny", image_size=64, r=8).load_adapter(tmp_path / "r4")
    with pytest.raises(TeacherkitError, match="trained with tuning 'lora'.*has tuning 'full'"):
        load_sam_with_lora("tiny", image_size=64, finetune="full").load_adapter(tmp_path / "r4")
    with pytest.raises(TeacherkitError, match="not a SAM adapter"):
        load_sam_with_lora("tiny", image_size=64).load_adapter(tmp_path)


def test_save_adapter_replaces_an_old_adapter_completely(tmp_path):
    teacher = load_sam_with_lora("tiny", image_size=64, mode="frozen_encoder")
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    teacher.save_adapter(target)
    assert not (target / "stale.txt").exists() and (target / "decoder_only.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temp folders left


@pytest.mark.parametrize("setup", ["lora", "full"])
def test_adapter_scale_moves_between_base_and_tuned(setup, shapes_samples):
    kwargs = {"image_size": 64, **SETUPS[setup]}
    base = load_sam_with_lora("tiny", **kwargs)
    tuned = load_sam_with_lora("tiny", **kwargs)
    train_steps(tuned, shapes_samples[:2], steps=2, lr=1e-2)
    batch = _eval_batch(tuned, shapes_samples[:2])
    base_out, tuned_out = _outputs(base, batch)["pred_masks"], _outputs(tuned, batch)["pred_masks"]
    tuned.set_adapter_scale(0.0)
    torch.testing.assert_close(_outputs(tuned, batch)["pred_masks"], base_out, rtol=1e-4, atol=1e-5)
    tuned.set_adapter_scale(0.5)
    half = _outputs(tuned, batch)["pred_masks"]
    assert not torch.allclose(half, base_out) and not torch.allclose(half, tuned_out)
    tuned.set_adapter_scale(1.0)
    torch.testing.assert_close(_outputs(tuned, batch)["pred_masks"], tuned_out, rtol=0, atol=0)


def test_adapter_folder_has_the_one_metadata_file_and_a_model_card(tmp_path):
    teacher = load_sam_with_lora("tiny", image_size=64, r=4)
    teacher.save_adapter(tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / "teacherkit_adapter.json").read_text())
    assert meta["teacher"] == "sam" and meta["tuning"] == "lora" and meta["extra"] == {"image_size": 64}
    assert meta["lora"]["r"] == 4 and meta["format"] == 1
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "tuning `lora`" in card


def test_adapter_with_the_earlier_metadata_name_still_loads(shapes_samples, tmp_path):
    trained = load_sam_with_lora("tiny", image_size=64, r=4)
    train_steps(trained, shapes_samples[:2], steps=1, lr=1e-2)
    batch = _eval_batch(trained, shapes_samples[:2])
    folder = tmp_path / "adapter"
    trained.save_adapter(folder)
    (folder / "teacherkit_adapter.json").unlink()  # the layout of earlier versions
    (folder / "teacherkit_sam.json").write_text(json.dumps(
        {"teacher": "sam", "tuning": "lora", "image_size": 64, "base": "tiny", "lora": {"r": 4}}))
    fresh = load_sam_with_lora("tiny", image_size=64, r=4)
    fresh.load_adapter(folder)
    assert torch.equal(_outputs(fresh, batch)["pred_masks"], _outputs(trained, batch)["pred_masks"])
    with pytest.raises(TeacherkitError, match="image_size 64.*image_size 128"):
        load_sam_with_lora("tiny", image_size=128, r=4).load_adapter(folder)
