"""`export --merge` of a Grounding DINO teacher: a folder plain transformers loads with the
class and Auto class its README names, giving the teacher's outputs."""

from __future__ import annotations

import json

import pytest
import torch
from dino_helpers import batch_for, make_teacher, shapes_info, tuned_lora_teacher

from teacherkit.inference.experiment import LoadedTeacher
from teacherkit.inference.export import _readme, export_merged, transformers_class


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_merged_export_loads_with_the_auto_class_and_gives_the_same_outputs(tmp_path):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, GroundingDinoForObjectDetection

    teacher = tuned_lora_teacher()
    batch = batch_for(teacher)
    teacher.model.eval()
    with torch.no_grad():
        expected = teacher.forward(teacher.model, batch)
    loaded = LoadedTeacher(teacher.spec, teacher, teacher.make_preprocessor(), teacher.config, "cpu")
    assert export_merged(loaded, tmp_path, name="grounding_dino") == "GroundingDinoForObjectDetection"

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["GroundingDinoForObjectDetection"]
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tmp_path).eval()
    assert type(model) is GroundingDinoForObjectDetection
    with torch.no_grad():
        got = teacher.forward(model, batch)
    torch.testing.assert_close(got["logits"], expected["logits"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["pred_boxes"], expected["pred_boxes"], rtol=1e-4, atol=1e-6)

    # the processor carries the size the teacher trained at, not transformers' 800/1333
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert dict(processor.image_processor.size) == {"shortest_edge": 64, "longest_edge": 96}
    assert processor.tokenizer.convert_tokens_to_ids("[SEP]") == 102


def test_export_readme_names_the_transformers_classes():
    class Experiment:  # the two attributes the README reads
        path = "exp1"
        info = shapes_info()

    text = _readme("grounding_dino", "GroundingDinoForObjectDetection", Experiment())
    assert "GroundingDinoForObjectDetection.from_pretrained" in text
    assert "AutoModelForZeroShotObjectDetection.from_pretrained" in text
    assert "AutoModel.from_pretrained" not in text  # it returns GroundingDinoModel, without the detection head
    assert "SamModel.from_pretrained" in _readme("sam", "SamModel", Experiment())


def test_transformers_class_sees_through_subclasses():
    from teacherkit_dino.modeling import TeacherGroundingDino

    model = make_teacher(shapes_info(), finetune="full").hf_model
    assert transformers_class(model) == "GroundingDinoForObjectDetection"
    legacy = TeacherGroundingDino(model.config)
    assert transformers_class(legacy) == "GroundingDinoForObjectDetection"
