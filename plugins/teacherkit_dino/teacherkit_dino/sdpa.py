"""Grounding DINO's plain multi-head attention through PyTorch's fused attention.

transformers' ``GroundingDinoMultiheadAttention`` (the decoder's query self-attention and
text cross-attention, and the encoder's text self-attention) multiplies queries by keys,
adds the mask, takes the softmax and multiplies by the values as separate operations. For
the decoder's self-attention over 900 queries that stores a ``batch × heads × 900 × 900``
probability tensor per layer for the backward pass (about 200 MB per layer at batch 8 in
float32) and launches half a dozen kernels where one would do.

:class:`SdpaMultiheadAttention` computes the same function with
``torch.nn.functional.scaled_dot_product_attention`` (same scale ``1/sqrt(head_dim)``, the
same additive mask, dropout on the attention probabilities with the same rate), so
outputs and gradients agree up to summation order; it is a subclass without new state,
switched in by reassigning ``__class__`` (parameters, state-dict keys and peft's LoRA on
``query``/``key``/``value``/``out_proj`` are untouched). Calls that ask for the attention
weights go to transformers' code, which returns them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoMultiheadAttention

#: the values of ``teachers.grounding_dino.attention``
ATTENTION_MODES = ("sdpa", "eager")


class SdpaMultiheadAttention(GroundingDinoMultiheadAttention):
    """``GroundingDinoMultiheadAttention`` computed by fused scaled-dot-product attention."""

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attention_mask: torch.Tensor | None = None, output_attentions: bool | None = False) -> tuple[Any, ...]:
        if output_attentions:
            return super().forward(queries, keys, values, attention_mask, output_attentions)
        batch, length, _ = queries.shape
        heads, width = self.num_attention_heads, self.attention_head_size

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, width).transpose(1, 2)

        query, key, value = split(self.query(queries)), split(self.key(keys)), split(self.value(values))
        mask = attention_mask.to(query.dtype) if attention_mask is not None else None
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                                 dropout_p=self.dropout.p if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, length, heads * width)
        return (self.out_proj(context),)


def set_attention(model: torch.nn.Module, mode: str) -> int:
    """Put every ``GroundingDinoMultiheadAttention`` of ``model`` in ``mode``: ``sdpa`` (this
    module's class) or ``eager`` (transformers'). Returns the number of modules switched."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode {mode!r}: expected one of {ATTENTION_MODES}")
    target = SdpaMultiheadAttention if mode == "sdpa" else GroundingDinoMultiheadAttention
    switched = 0
    for module in model.modules():
        if isinstance(module, GroundingDinoMultiheadAttention) and type(module) is not target:
            module.__class__ = target
            switched += 1
    return switched
