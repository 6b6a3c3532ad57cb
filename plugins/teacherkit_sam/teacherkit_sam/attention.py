"""SAM's image-encoder attention with the relative-position term folded into the head
dimension, so scaled-dot-product attention never sees an ``N x N`` bias.

Why
---
transformers' ``SamVisionSdpaAttention`` adds SAM's decomposed relative positions
(MViTv2) as a dense additive mask: for every query ``q`` and key ``k`` of a layer it
builds ``bias[q, k] = rel_h[q, row(k)] + rel_w[q, col(k)]``, a ``(B, heads, N, N)``
tensor, and passes it as ``attn_mask``. In the global layers of ViT-B at 1024 px
(``N = 64 * 64 = 4096``, 12 heads) that is 1.6 G elements per layer at batch 8
(3.2 GB in bf16). An explicit mask also rules out the flash kernels, and under LoRA
the bias depends on trainable inputs (the query), so the backward pass materialises a
second ``N x N`` tensor, the bias gradient.

The fold
--------
The bias is a sum of two terms, each of which depends on the key only through its grid
row or its grid column. With ``rel_h = q . Rh`` of shape ``(N, Kh)`` (one column per key
row) and ``rel_w = q . Rw`` of shape ``(N, Kw)`` (one per key column), the bias is a
matrix product: ``bias = [rel_h, rel_w] @ [onehot(row(k)), onehot(col(k))]^T``. Scores
``s * q . k + bias`` are therefore one dot product of longer vectors::

    q' = [s * q, rel_h, rel_w, 0...]      k' = [k, onehot(row(k)), onehot(col(k)), 0...]
    softmax(q' . k') == softmax(s * q . k + bias)

and ``attention(q, k, v, bias, scale=s) == attention(q', k', v, scale=1)`` exactly, up to
floating-point summation order. The extra width is ``Kh + Kw`` (128 for a 64x64 global
grid, 28 for a 14x14 window), padded with zeros to a multiple of 8 because the fused
kernels want aligned head dimensions (64 -> 192 global, 64 -> 96 windowed). Nothing of
size ``N x N`` is ever stored: the fused kernel forms the scores tile by tile, and the
gradients of ``rel_h``/``rel_w`` (hence of the query, ``rel_pos_h``/``rel_pos_w`` and any
LoRA on ``qkv``) arrive as the matching slices of the gradient of ``q'``.

The values need not grow, but not every kernel accepts a value head dimension different
from the query/key one: CUDA's memory-efficient and cuDNN kernels do, the fused CPU
kernel and CUDA's flash kernel need equal widths. Given a narrower value, CPU SDPA falls
back to its unfused "math" path, which materialises the ``N x N`` scores (correct, but
exactly what the fold is meant to avoid). So values are padded with zero columns to the
query/key width, and the output sliced back, on every device except CUDA
(``pad_value=None``, the default); ``use_folded_attention(model, pad_value=True/False)``
forces either choice (padded, flash is eligible on CUDA but does a 3x wider ``P @ V``).
Measured on one H200 (bf16 autocast, ViT-B encoder with
LoRA on ``qkv``, batch 8 at 1024 px, forward + backward of the encoder alone): 260 ms and
24.3 GiB peak with transformers' SDPA, 141 ms and 10.8 GiB folded (narrow value), 145 ms
padded. In bf16 the fold is also slightly more accurate than the bf16 mask, because the
bias terms are summed inside the kernel's fp32 accumulator.

Windowed layers get the same treatment: ``SamVisionLayer`` pads the grid and cuts it
into ``window x window`` windows before calling the attention, so each call sees
``(B * windows, window, window, C)`` and the fold uses the window's rows and columns.

Switching keeps parameters, buffers and state-dict keys: :func:`use_folded_attention`
only reassigns each attention module's ``__class__`` (a subclass without new state), so
adapters and exports are unaffected, and peft's LoRA (which wraps ``qkv`` inside the
attention module) keeps working. :func:`use_transformers_attention` switches back.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.sam.modeling_sam import SamVisionAttention, SamVisionSdpaAttention

__all__ = [
    "ATTENTION_MODES",
    "FoldedSamVisionAttention",
    "apply_attention",
    "count_folded_attention",
    "folded_sdpa",
    "use_folded_attention",
    "use_transformers_attention",
]

log = logging.getLogger(__name__)

#: the values of ``teachers.sam.attention``
ATTENTION_MODES = ("folded", "sdpa", "eager")

#: kernels want the query/key head dimension aligned to 8 elements
_ALIGN = 8


def _onehot_keys(height: int, width: int, width_total: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(height * width, width_total)``: row ``n`` (key at grid row ``n // width``, column
    ``n % width``) has ones at ``n // width`` and ``height + n % width``; the rest, the
    alignment padding included, is zero."""
    n = torch.arange(height * width, device=device)
    rows = (n // width)[:, None] == torch.arange(height, device=device)[None, :]
    cols = (n % width)[:, None] == torch.arange(width, device=device)[None, :]
    out = torch.cat([rows, cols], dim=1).to(dtype)
    pad = width_total - height - width
    return F.pad(out, (0, pad)) if pad else out


def folded_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    grid: tuple[int, int],
    scale: float,
    *,
    dropout_p: float = 0.0,
    pad_value: bool | None = None,
) -> torch.Tensor:
    """``softmax(scale * q @ k^T + bias) @ v`` for ``bias[i, j] = rel_h[i, row(j)] +
    rel_w[i, col(j)]`` without forming ``bias``.

    :param query, key, value: ``(..., N, D)`` (value may have another last dimension),
        keys ordered row-major over a ``grid = (height, width)`` grid, ``N = height * width``.
    :param rel_h: ``(..., N, height)``; :param rel_w: ``(..., N, width)``.
    :param pad_value: pad ``value`` with zeros to the query/key width and slice the
        result back: flash kernels (CPU and CUDA) need equal widths. ``None``: pad except
        on CUDA, whose memory-efficient kernel takes the narrower value as it is.
    """
    height, width = grid
    dtype = query.dtype
    head_dim = query.shape[-1]
    folded = head_dim + height + width
    pad = -folded % _ALIGN
    lead = query.shape[:-1]
    parts = [query * scale, rel_h.to(dtype), rel_w.to(dtype)]
    if pad:
        parts.append(query.new_zeros(()).expand(*lead, pad))
    query = torch.cat(parts, dim=-1)
    onehot = _onehot_keys(height, width, height + width + pad, dtype, key.device)
    key = torch.cat([key, onehot.expand(*key.shape[:-2], *onehot.shape)], dim=-1)
    value_dim = value.shape[-1]
    if pad_value is None:
        pad_value = value.device.type != "cuda"
    if pad_value and value_dim != query.shape[-1]:
        # flash kernels need value width == query/key width (on CPU a narrower value sends
        # SDPA to its unfused path, N x N scores and all): zero columns, sliced off below
        value = F.pad(value, (0, query.shape[-1] - value_dim))
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=1.0)
    return out[..., :value_dim] if out.shape[-1] != value_dim else out


class FoldedSamVisionAttention(SamVisionSdpaAttention):
    """SAM's image-encoder attention with the relative-position bias folded into the
    head dimension (see the module docstring). Same parameters and state-dict keys as
    transformers' classes; modules become one through :func:`use_folded_attention`."""

    #: set per module by use_folded_attention(pad_value=...); None: pad except on CUDA
    folded_pad_value: bool | None = None

    def forward(self, hidden_states: torch.Tensor, output_attentions: Any = False) -> tuple[torch.Tensor, None]:
        if not self.use_rel_pos:
            return super().forward(hidden_states, output_attentions=output_attentions)
        if output_attentions:
            log.warning(
                "the folded SAM attention returns no attention weights; set teachers.sam.attention=eager for them"
            )
        batch, height, width, _ = hidden_states.shape
        heads = self.num_attention_heads
        tokens = height * width
        # (3, B, heads, N, head_dim), as transformers lays it out
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        head_dim = query.shape[-1]

        # the two factors of transformers' get_decomposed_rel_pos, never added up to N x N
        rel_pos_h = self.get_rel_pos(height, height, self.rel_pos_h)  # (height, height, head_dim)
        rel_pos_w = self.get_rel_pos(width, width, self.rel_pos_w)  # (width, width, head_dim)
        grid_query = query.reshape(batch * heads, height, width, head_dim)
        rel_h = torch.einsum("bhwc,hkc->bhwk", grid_query, rel_pos_h.to(query.dtype))
        rel_w = torch.einsum("bhwc,wkc->bhwk", grid_query, rel_pos_w.to(query.dtype))
        rel_h = rel_h.reshape(batch, heads, tokens, height)
        rel_w = rel_w.reshape(batch, heads, tokens, width)

        out = folded_sdpa(
            query, key, value, rel_h, rel_w, (height, width), self.scale,
            dropout_p=self.dropout if self.training else 0.0, pad_value=self.folded_pad_value,
        )
        out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(out), None


_TRANSFORMERS_CLASSES = (SamVisionAttention, SamVisionSdpaAttention)


def use_folded_attention(model: Any, *, pad_value: bool | None = None) -> int:
    """Switch every image-encoder attention module of ``model`` (a ``SamModel``, its
    vision encoder, or a peft wrapper of either) to :class:`FoldedSamVisionAttention`.

    Only the class changes (parameters, state-dict keys and LoRA wrappers stay), and the
    original class is remembered for :func:`use_transformers_attention`. ``pad_value``:
    pad the values to the query/key width (``True``; flash kernels need it), keep them
    narrow (``False``; CUDA's memory-efficient kernel), or ``None``: pad except on CUDA.
    Returns the number of modules switched by this call (already folded ones only get
    ``pad_value`` updated and are not counted).
    """
    switched = 0
    for module in model.modules():
        if isinstance(module, FoldedSamVisionAttention):
            module.folded_pad_value = pad_value
        elif type(module) in _TRANSFORMERS_CLASSES:
            module._unfolded_class = type(module)
            module.__class__ = FoldedSamVisionAttention
            module.folded_pad_value = pad_value
            switched += 1
    return switched


def use_transformers_attention(model: Any) -> int:
    """Undo :func:`use_folded_attention`: every folded module gets back the transformers
    class it had (``SamVisionSdpaAttention`` or the eager ``SamVisionAttention``).
    Returns the number of modules switched back."""
    switched = 0
    for module in model.modules():
        if isinstance(module, FoldedSamVisionAttention):
            module.__class__ = module.__dict__.pop("_unfolded_class", SamVisionSdpaAttention)
            module.__dict__.pop("folded_pad_value", None)
            switched += 1
    return switched


def count_folded_attention(model: Any) -> int:
    """How many image-encoder attention modules of ``model`` use the folded forward."""
    return sum(isinstance(m, FoldedSamVisionAttention) for m in model.modules())


def apply_attention(model: Any, mode: str) -> int:
    """Put ``model``'s image-encoder attention in ``mode`` (``teachers.sam.attention``) as far
    as a built model allows: ``folded`` switches to the folded forward, ``sdpa`` and
    ``eager`` switch any folded module back to transformers' class. (Which transformers
    class a model has, SDPA or eager, is fixed when it is built: see ``loading.load_base``.)
    Returns the number of modules switched."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode {mode!r}: expected one of {ATTENTION_MODES}")
    if mode == "folded":
        return use_folded_attention(model)
    return use_transformers_attention(model)
