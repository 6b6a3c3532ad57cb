"""Run by test_dino_msda.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU
interpreter must be chosen before the kernel is defined): compares the Triton
deformable-attention kernel with transformers' implementation and prints the findings as JSON."""

from __future__ import annotations

import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402
from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention  # noqa: E402

from teacherkit_dino import msda  # noqa: E402


def kernel_vs_transformers() -> dict:
    torch.manual_seed(0)
    batch, heads, dim, points = 2, 2, 8, 3
    shapes = [(7, 9), (4, 5), (1, 3)]  # odd sizes, a one-row level
    starts = torch.tensor([0, 63, 83])
    keys, queries = sum(h * w for h, w in shapes), 29  # 29: not a multiple of the query block
    value = torch.randn(batch, keys, heads, dim)
    # points inside, on the border and outside the map (zero padding must apply)
    loc = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.6 - 0.3
    attn = torch.softmax(torch.randn(batch, queries, heads, len(shapes) * points), -1)
    attn = attn.view(batch, queries, heads, len(shapes), points)
    ref = MultiScaleDeformableAttention()(value, torch.tensor(shapes), shapes, starts, loc, attn, 64)
    out = msda.msda_forward(value, shapes, starts, loc, attn, block_queries=16)
    low = msda.msda_forward(value.bfloat16(), shapes, starts, loc, attn, block_queries=16)
    return {"shape_equal": list(ref.shape) == list(out.shape), "max_abs": float((ref - out).abs().max()),
            "ref_abs_mean": float(ref.abs().mean()), "bf16_dtype": str(low.dtype),
            "bf16_max_abs": float((ref - low.float()).abs().max())}


def teacher_forward_and_gradients() -> dict:
    """A tiny decoder-LoRA teacher: the frozen encoder's calls go to the kernel, the decoder's
    (whose inputs need gradients) to transformers; outputs, loss and LoRA gradients match
    the teacher without the dispatch."""
    sys.path.insert(0, os.path.dirname(__file__))
    from dino_helpers import make_teacher, shapes_info

    from teacherkit_dino.loss import GroundingDinoLoss

    info = shapes_info()
    runs = {}
    for mode in ("torch", "auto"):
        torch.manual_seed(0)
        teacher = make_teacher(info, finetune="lora", deformable_attention=mode)
        teacher.model.train()
        pre = teacher.make_preprocessor()
        torch.manual_seed(1)
        samples = []
        for i in range(2):
            image = (torch.rand(60, 80, 3) * 255).to(torch.uint8).numpy()
            samples.append({"image": image, "image_id": i, "file_name": f"{i}.png", "orig_size": (60, 80),
                            "boxes": torch.tensor([[5.0, 6.0, 30.0, 20.0]]).numpy(),
                            "labels": torch.tensor([1]).numpy(), "category_ids": torch.tensor([7]).numpy(),
                            "annotation_ids": torch.tensor([i]).numpy(), "iscrowd": torch.tensor([0]).numpy(),
                            "masks": None, "extra": {"seed": i}})
        batch = pre.collate([pre(s, train=False) for s in samples])
        loss_fn = GroundingDinoLoss.from_model_config(teacher.hf_model.config)
        out = teacher.forward(teacher.model, batch)
        loss = loss_fn(out, batch)["loss"]
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in teacher.model.named_parameters() if p.grad is not None}
        runs[mode] = {"logits": out["logits"].detach(), "loss": float(loss.detach()), "grads": grads,
                      "counts": msda.dispatch_counts(teacher.hf_model),
                      "keys": sorted(teacher.model.state_dict())}
    a, b = runs["torch"], runs["auto"]
    grad_diff = max(float((a["grads"][n] - b["grads"][n]).abs().max()) for n in a["grads"])
    return {"counts_torch_mode": a["counts"], "counts_auto_mode": b["counts"],
            # text positions past the prompt are -inf in both: compare the finite logits
            "logits_same_inf": bool(torch.equal(torch.isinf(a["logits"]), torch.isinf(b["logits"]))),
            "logits_max_abs": float((a["logits"] - b["logits"])[torch.isfinite(a["logits"])].abs().max()),
            "grad_max": max(float(g.abs().max()) for g in a["grads"].values()),
            "loss_torch": a["loss"], "loss_auto": b["loss"], "grad_max_abs": grad_diff,
            "grad_names_equal": sorted(a["grads"]) == sorted(b["grads"]), "state_keys_equal": a["keys"] == b["keys"]}


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({"kernel": kernel_vs_transformers(), "teacher": teacher_forward_and_gradients()}))
