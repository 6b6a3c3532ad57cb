"""The folded image-encoder attention (teacherkit_sam.attention): same outputs and
gradients as transformers' own attention, no N x N tensor, same state dict, and the
``teachers.sam.attention`` switch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from teacherkit_sam import load_sam_with_lora
from teacherkit_sam.attention import (
    FoldedSamVisionAttention,
    count_folded_attention,
    folded_sdpa,
    use_folded_attention,
    use_transformers_attention,
)
from teacherkit_sam.config import SamConfig
from teacherkit_sam.loading import load_base, tiny_sam_config

HEADS = 2
GRID = 10  # 80 px / patch 8: the 4x4 windows need padding to 12x12


def vision_model(attn: str = "sdpa", seed: int = 0):
    """A SAM vision encoder (random weights, random non-zero rel-pos tables): windowed
    layers 0 and 2 (window 4 on a 10x10 grid, so padded), global layer 1."""
    from transformers import SamVisionConfig, SamVisionModel

    config = SamVisionConfig(
        hidden_size=32, output_channels=16, num_hidden_layers=3, num_attention_heads=HEADS, image_size=8 * GRID,
        patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=48, initializer_range=0.2,
    )
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = SamVisionModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "rel_pos" in name:  # transformers initialises them to zero
                param.normal_(0, 0.5)
    return model.float()


def pixels(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 8 * GRID, 8 * GRID, generator=torch.Generator().manual_seed(seed))


def loss_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    out = model(pixel_values=x).last_hidden_state
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def assert_same(ref, test, what):
    (out_r, grads_r), (out_t, grads_t) = ref, test
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5, msg=f"{what}: encoder output")
    assert grads_r.keys() == grads_t.keys()
    for name in grads_r:
        torch.testing.assert_close(grads_t[name], grads_r[name], rtol=1e-4, atol=1e-5, msg=f"{what}: {name}")


def test_layers_are_windowed_padded_and_global():
    model = vision_model()
    sizes = [layer.window_size for layer in model.vision_encoder.layers]
    assert sizes == [4, 0, 4] and GRID % 4  # both kinds run, and windowing pads


@pytest.mark.parametrize("reference", ["sdpa", "eager"])
@pytest.mark.parametrize("pad_value", [None, False, True])
def test_folded_matches_transformers_outputs_and_all_gradients(reference, pad_value):
    ref_model = vision_model(reference)
    folded = copy.deepcopy(ref_model)
    assert use_folded_attention(folded, pad_value=pad_value) == 3
    x = pixels()
    ref = loss_and_grads(ref_model, x)
    test = loss_and_grads(folded, x)
    assert any("rel_pos_h" in n for n in ref[1]) and any("attn.qkv.weight" in n for n in ref[1])
    assert_same(ref, test, f"folded vs {reference}")


def test_folded_matches_transformers_with_lora_on_qkv():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(vision_model(), LoraConfig(r=4, lora_alpha=8, target_modules=["qkv"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero, which would hide errors in lora_A's gradient
                param.normal_(0, 0.1)
            if "rel_pos" in name:
                param.requires_grad_(True)
    folded = copy.deepcopy(model)
    assert use_folded_attention(folded) == 3
    # LoRA still wraps qkv inside the (now folded) attention module
    attn = folded.base_model.model.vision_encoder.layers[1].attn
    assert isinstance(attn, FoldedSamVisionAttention) and type(attn.qkv).__name__ == "Linear"
    assert hasattr(attn.qkv, "lora_A")
    x = pixels()
    ref = loss_and_grads(model, x)
    test = loss_and_grads(folded, x)
    names = set(ref[1])
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert any("rel_pos_w" in n for n in names)
    assert_same(ref, test, "folded vs sdpa under LoRA")


def test_switching_counts_keeps_state_dict_and_reverts():
    model = vision_model()
    before = model.state_dict()
    assert use_folded_attention(model) == 3
    assert use_folded_attention(model) == 0  # already folded
    assert count_folded_attention(model) == 3
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert use_transformers_attention(model) == 3
    assert {type(layer.attn).__name__ for layer in model.vision_encoder.layers} == {"SamVisionSdpaAttention"}
    assert count_folded_attention(model) == 0


def test_folded_sdpa_matches_an_explicit_bias():
    g = torch.Generator().manual_seed(0)
    h, w, d = 3, 5, 12
    q, k = torch.randn(2, 4, h * w, d, generator=g), torch.randn(2, 4, h * w, d, generator=g)
    v = torch.randn(2, 4, h * w, 7, generator=g)
    rel_h, rel_w = torch.randn(2, 4, h * w, h, generator=g), torch.randn(2, 4, h * w, w, generator=g)
    rows = torch.arange(h * w) // w
    cols = torch.arange(h * w) % w
    bias = rel_h[..., rows] + rel_w[..., cols]
    scores = 0.3 * q @ k.transpose(-1, -2) + bias
    expected = scores.softmax(-1) @ v
    for pad_value in (None, False, True):
        out = folded_sdpa(q, k, v, rel_h, rel_w, (h, w), 0.3, pad_value=pad_value)
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


class LargestTensors(TorchDispatchMode):
    """Records the number of elements of every tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.sizes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.sizes.append(tuple(t.shape))
        return out


def test_no_n_by_n_tensor_in_forward_or_backward():
    """The global layer has N = 100 tokens: transformers' SDPA path creates (B, heads,
    N, N) biases (forward, and their gradient in backward); the folded path nothing of
    that size. (Values are padded to the query/key width on CPU: with a narrower value
    CPU SDPA would take its unfused path and build the N x N scores after all.)"""
    n = GRID * GRID
    x = pixels()
    # the largest tensor that is not attention-shaped: the MLP's (B, 10, 10, mlp_dim)
    # and the windowed layers' (B * 9, heads, 16, 16) are all well below B * heads * N * N
    limit = 2 * HEADS * n * n
    for name, fold, expect_big in (("sdpa", False, True), ("folded", True, False)):
        model = vision_model()
        if fold:
            use_folded_attention(model)
        with LargestTensors() as seen:
            out = model(pixel_values=x).last_hidden_state
            out.sum().backward()
        big = [s for s in seen.sizes if torch.Size(s).numel() >= limit]
        assert bool(big) == expect_big, (name, big[:3])


def test_autocast_bf16_agrees_with_float32():
    ref_model = vision_model()
    folded = copy.deepcopy(ref_model)
    use_folded_attention(folded)
    x = pixels()
    with torch.no_grad():
        exact = ref_model(pixel_values=x).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_ref = ref_model(pixel_values=x).last_hidden_state.float()
            low = folded(pixel_values=x).last_hidden_state.float()
    # the folded bf16 result is as close to the float32 result as transformers' own bf16 one
    err_ref = (low_ref - exact).abs().max().item()
    err = (low - exact).abs().max().item()
    assert err <= 2 * err_ref + 1e-3, (err, err_ref)


# -- the teachers.sam.attention switch ---------------------------------------------------------

TINY = {"image_size": 64}


def attention_classes(teacher) -> set[str]:
    return {type(layer.attn).__name__ for layer in teacher.sam.vision_encoder.layers}


def test_config_switch_picks_the_attention_and_keeps_weights():
    assert SamConfig().attention == "folded"
    folded = load_sam_with_lora("tiny", **TINY)
    sdpa = load_sam_with_lora("tiny", attention="sdpa", **TINY)
    eager = load_sam_with_lora("tiny", attention="eager", **TINY)
    assert attention_classes(folded) == {"FoldedSamVisionAttention"}
    assert attention_classes(sdpa) == {"SamVisionSdpaAttention"}
    assert attention_classes(eager) == {"SamVisionAttention"}
    # same weights under the same keys whatever the attention: adapters and exports fit all three
    states = [t.model.state_dict() for t in (folded, sdpa, eager)]
    assert list(states[0]) == list(states[1]) == list(states[2])
    for other in states[1:]:  # (LoRA's A matrices are drawn unseeded by peft)
        assert all(torch.equal(states[0][k], other[k]) for k in states[0] if "lora_" not in k)


def test_config_switch_in_load_base_and_same_teacher_outputs(tmp_path):
    base, _ = load_base(SamConfig(base="tiny", **TINY))
    assert count_folded_attention(base) == tiny_sam_config(64).vision_config.num_hidden_layers == 2
    a = load_sam_with_lora("tiny", finetune="full", **TINY)
    b = load_sam_with_lora("tiny", finetune="full", attention="sdpa", **TINY)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0]], [[10.0, 20.0, 60.0, 60.0]]])
    outs = []
    for teacher in (a, b):
        out = teacher.model(pixel_values=x, input_boxes=boxes, multimask_output=False)
        out.pred_masks.float().pow(2).mean().backward()
        outs.append((out.pred_masks.detach(), {n: p.grad for n, p in teacher.model.named_parameters()
                                               if p.grad is not None and "vision_encoder" in n}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    assert outs[0][1].keys() == outs[1][1].keys() and outs[0][1]
    for name, grad in outs[1][1].items():
        torch.testing.assert_close(outs[0][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)

    # an adapter saved by a folded teacher loads into an sdpa one
    a.save_adapter(tmp_path / "adapter")
    b.load_adapter(tmp_path / "adapter")
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
