"""The encoder's overflow guard, without making the host wait for the GPU.

In training mode, each of transformers' Grounding DINO encoder layers
(``GroundingDinoDeformableLayer``) ends with ``if not torch.isfinite(hidden_states).all():``
and, when a value overflowed, clamps the whole tensor to the dtype's largest value less
1000. Turning that tensor into a Python ``bool`` is a host wait: six per training step
(one per layer) even when the encoder is frozen, out of the thirteen that were left in
teacherkit's step (docs/performance.md), and it keeps the host from queueing the next
layer's kernels while the GPU works.

:class:`SyncFreeDeformableLayer` is that layer with the same computation and a guard that
stays on the device: the clamp is applied unconditionally where it cannot change a finite
value (float32 and bfloat16, whose largest value less 1000 rounds back to the largest
value), and through ``torch.where`` on the device-side test otherwise (float16). Outputs
are identical; the class is switched in by reassigning ``__class__`` (no new state, the
state dict is unchanged).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoDeformableLayer

#: per dtype: whether clamping at ``finfo.max - 1000`` leaves every finite value as it is
_CLAMP_IS_EXACT: dict[torch.dtype, bool] = {}


def clamp_nonfinite(hidden_states: torch.Tensor) -> torch.Tensor:
    """What transformers' guard computes (``hidden_states`` unchanged when every value is
    finite, else clamped to +-(``finfo.max`` - 1000)), with no host wait."""
    dtype = hidden_states.dtype
    bound = torch.finfo(dtype).max - 1000
    clamped = hidden_states.clamp(min=-bound, max=bound)
    exact = _CLAMP_IS_EXACT.get(dtype)
    if exact is None:
        exact = _CLAMP_IS_EXACT[dtype] = float(torch.tensor(bound, dtype=dtype)) == torch.finfo(dtype).max
    if exact:
        return clamped
    return torch.where(torch.isfinite(hidden_states).all(), hidden_states, clamped)


class SyncFreeDeformableLayer(GroundingDinoDeformableLayer):
    """``GroundingDinoDeformableLayer`` whose training-mode overflow guard stays on the
    device (:func:`clamp_nonfinite`)."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                position_embeddings: torch.Tensor | None = None, reference_points: Any = None,
                spatial_shapes: Any = None, spatial_shapes_list: Any = None, level_start_index: Any = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, Any]:
        residual = hidden_states
        attended, attn_weights = self.self_attn(
            hidden_states=hidden_states, attention_mask=attention_mask, encoder_hidden_states=hidden_states,
            encoder_attention_mask=attention_mask, position_embeddings=position_embeddings,
            reference_points=reference_points, spatial_shapes=spatial_shapes,
            spatial_shapes_list=spatial_shapes_list, level_start_index=level_start_index,
            output_attentions=output_attentions,
        )
        attended = F.dropout(attended, p=self.dropout, training=self.training)
        hidden_states = self.self_attn_layer_norm(residual + attended)
        # feed-forward block: fc1, activation, dropout, fc2, dropout, residual, norm
        ffn = F.dropout(self.activation_fn(self.fc1(hidden_states)), p=self.activation_dropout,
                        training=self.training)
        ffn = F.dropout(self.fc2(ffn), p=self.dropout, training=self.training)
        hidden_states = self.final_layer_norm(hidden_states + ffn)
        if self.training:
            hidden_states = clamp_nonfinite(hidden_states)
        return hidden_states, attn_weights


def install(model: torch.nn.Module, enabled: bool = True) -> int:
    """Switch every encoder layer of ``model`` to :class:`SyncFreeDeformableLayer`
    (``enabled=False``: back to transformers' class). Returns how many layers are switched."""
    switched = 0
    for module in model.modules():
        if isinstance(module, GroundingDinoDeformableLayer):
            module.__class__ = SyncFreeDeformableLayer if enabled else GroundingDinoDeformableLayer
            switched += enabled
    return switched
