"""`export --merge` of a SAM teacher: config.json names SamModel and the processor has
the teacher's input size."""

from __future__ import annotations

import json

import torch
from sam_helpers import train_steps

from teacherkit.inference.experiment import LoadedTeacher
from teacherkit.inference.export import export_merged
from teacherkit_sam import load_sam_with_lora


def test_merged_sam_export_loads_as_sam_model_at_the_trained_size(shapes_samples, tmp_path):
    from transformers import AutoModelForMaskGeneration, SamModel, SamProcessor

    teacher = load_sam_with_lora("tiny", image_size=64, r=4)
    train_steps(teacher, shapes_samples[:2], steps=1, lr=1e-2)
    pre = teacher.make_preprocessor()
    batch = {**pre.collate([pre(s, train=False) for s in shapes_samples[:2]]), "prompt_kind": "box"}
    teacher.model.eval()
    with torch.no_grad():
        expected = teacher.forward(teacher.model, batch)
    loaded = LoadedTeacher(teacher.spec, teacher, pre, teacher.config, "cpu")
    assert export_merged(loaded, tmp_path, name="sam") == "SamModel"
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["SamModel"]
    model = AutoModelForMaskGeneration.from_pretrained(tmp_path).eval()
    assert type(model) is SamModel
    with torch.no_grad():
        got = teacher.forward(model, batch)
    torch.testing.assert_close(got["pred_masks"], expected["pred_masks"], rtol=1e-4, atol=1e-4)
    processor = SamProcessor.from_pretrained(tmp_path)
    assert processor.image_processor.size["longest_edge"] == 64
