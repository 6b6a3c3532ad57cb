"""The adapter-loading snippets of docs/teachers/grounding_dino.md run as written and
reproduce teacherkit's predictions exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from dino_helpers import batch_for, tuned_lora_teacher

DOC = Path(__file__).resolve().parents[3] / "docs" / "teachers" / "grounding_dino.md"


def snippets() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### Loading an adapter without teacherkit"):]
    section = section[: section.index("\n## ")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_both_snippets():
    blocks = snippets()
    assert len(blocks) == 2
    assert "load_adapter(base" in blocks[0] and "PeftModel.from_pretrained(base" in blocks[1]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("index", [0, 1], ids=["load_adapter", "plain-peft"])
def test_snippet_reproduces_teacherkit_predictions(index, tmp_path, monkeypatch):
    teacher = tuned_lora_teacher()
    batch = batch_for(teacher)
    teacher.model.eval()
    with torch.no_grad():
        expected = teacher.forward(teacher.model, batch)
    folder = tmp_path / "exp1" / "teachers" / "grounding_dino"
    teacher.save_adapter(folder / "adapter")
    teacher.save_base(folder / "base")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippets()[index], str(DOC), "exec"), scope)
    model = scope["model"].eval()
    with torch.no_grad():
        got = teacher.forward(model, batch)
    assert torch.equal(got["logits"], expected["logits"])
    assert torch.equal(got["pred_boxes"], expected["pred_boxes"])
