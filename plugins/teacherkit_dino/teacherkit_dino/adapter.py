"""Grounding DINO adapters outside teacherkit: :func:`load_adapter` for plain
transformers + peft users, the model card's loading code, and adapters written by
earlier versions (the box head in ``box_head.safetensors`` beside the peft files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teacherkit.adapters import AdapterError

#: Where versions before the peft-only layout kept the trained box head.
LEGACY_BOX_HEAD_FILE = "box_head.safetensors"

CARD_USAGE_LORA = """\
With transformers and peft (`teacherkit_dino.load_adapter` is `PeftModel.from_pretrained` after
pointing transformers 5's `get_input_embeddings` at the text encoder's word embeddings, which peft
asks for and Grounding DINO cannot answer by itself):

```python
from transformers import GroundingDinoForObjectDetection
from teacherkit_dino import load_adapter

base = GroundingDinoForObjectDetection.from_pretrained("{base}")
model = load_adapter(base, "path/to/this/folder")
```

Without teacherkit installed, the same in plain peft:

```python
from peft import PeftModel

base.get_input_embeddings = lambda: base.model.text_backbone.embeddings.word_embeddings
model = PeftModel.from_pretrained(base, "path/to/this/folder")
```

Or in teacherkit: `teacherkit.inference.load_experiment(experiment).teacher("grounding_dino")`.
"""

CARD_USAGE_FULL = """\
A whole model (every weight was trained):

```python
from transformers import GroundingDinoForObjectDetection

model = GroundingDinoForObjectDetection.from_pretrained("path/to/this/folder")
```
"""


def load_adapter(model: Any, adapter_dir: str | Path, **kwargs: Any) -> Any:
    """Load a teacherkit Grounding DINO LoRA adapter onto transformers'
    ``GroundingDinoForObjectDetection`` with peft; returns the ``PeftModel``.

    This is ``PeftModel.from_pretrained(model, adapter_dir, **kwargs)``, with the one
    workaround it needs on transformers 5 (``get_input_embeddings`` pointed at the text
    encoder's word embeddings). Adapters written by teacherkit before the box head moved
    into peft's files (``box_head.safetensors`` beside them) load too: the head is
    copied into ``model`` first.
    """
    from peft import PeftModel

    from teacherkit.adapters import point_input_embeddings
    from teacherkit_dino.modeling import TEXT_EMBEDDINGS, box_head_parameters

    adapter_dir = Path(adapter_dir)
    point_input_embeddings(model, TEXT_EMBEDDINGS)
    legacy = adapter_dir / LEGACY_BOX_HEAD_FILE
    if legacy.is_file():
        copy_legacy_box_head(box_head_parameters(model), legacy)
    return PeftModel.from_pretrained(model, str(adapter_dir), **kwargs)


def copy_legacy_box_head(params: dict[str, Any], path: Path) -> None:
    """Copy a ``box_head.safetensors`` of an earlier version into the box head
    parameters (plain names, :func:`teacherkit_dino.modeling.box_head_parameters`)."""
    import torch
    from safetensors.torch import load_file

    head = load_file(str(path))
    if set(head) != set(params):
        raise AdapterError(
            f"{path}: box head tensors {sorted(set(head) ^ set(params))[:3]} do not match this model's box head"
        )
    with torch.no_grad():
        for name, tensor in head.items():
            params[name].copy_(tensor)
