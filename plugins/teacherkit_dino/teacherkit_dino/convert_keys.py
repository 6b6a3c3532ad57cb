"""IDEA-Research's original Grounding DINO tensors under transformers' names.

Written from the module structure of the original code (``groundingdino/models/GroundingDINO``):
``GroundingDINO`` holds ``backbone`` (a ``Joiner``: ``[0]`` the Swin transformer with
``patch_embed``, ``layers[i].blocks[j]`` of ``norm1``/``attn`` (one fused ``qkv`` linear,
``proj``, a relative-position table)/``norm2``/``mlp``, ``layers[i].downsample`` and one
``norm{k}`` per returned stage; ``[1]`` the sine position encoding, no weights), ``bert``
(BERT's ``embeddings``/``encoder``/``pooler``), ``feat_map`` (BERT width to d_model),
``input_proj`` (conv + GroupNorm per level), ``transformer`` (``encoder.layers`` deformable
layers, ``encoder.text_layers`` text enhancers with a fused ``nn.MultiheadAttention``,
``encoder.fusion_layers`` bi-attention blocks, ``decoder.layers`` with ``cross_attn``,
``ca_text``, ``self_attn`` and ``norm1..3``/``catext_norm``, ``decoder.ref_point_head``,
``tgt_embed``, ``enc_output(_norm)``, ``enc_out_bbox_embed``) and the shared box head
``bbox_embed`` (also registered as ``transformer.decoder.bbox_embed``).

Two kinds of change besides renames: the fused projections (Swin's ``qkv``, the
``in_proj_weight`` of ``nn.MultiheadAttention``) are split into their query/key/value
thirds, in that order, as both layers slice them. Light at import: no torch here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from teacherkit.errors import TeacherkitError

SWIN = "model.backbone.conv_encoder.model."
#: Tensors of the original that transformers has no place for, and why.
DROPPED = {
    r"bert\.pooler\..*": "BERT's pooler: the original never uses its output; transformers builds BERT without it",
    r"bert\.embeddings\.position_ids": "a buffer older transformers saved; transformers recomputes it",
    r".*\.relative_position_index": "Swin's index buffer; transformers computes the same one (non-persistent)",
}
#: transformers tensors the original has no counterpart for, and the value they get.
UNMATCHED = {
    SWIN + "swin.layernorm.weight": "ones: SwinModel's final LayerNorm, which SwinBackbone never applies",
    SWIN + "swin.layernorm.bias": "zeros: as above",
}

_BLOCK, _HF_BLOCK = r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.", SWIN + r"swin.encoder.layers.\1.blocks.\2."
_ENC, _HF_ENC = r"transformer\.encoder\.layers\.(\d+)\.", r"model.encoder.layers.\1.deformable_layer."
_TEXT, _HF_TEXT = r"transformer\.encoder\.text_layers\.(\d+)\.", r"model.encoder.layers.\1.text_enhancer_layer."
_FUSION, _HF_FUSION = r"transformer\.encoder\.fusion_layers\.(\d+)\.", r"model.encoder.layers.\1.fusion_layer."
_DEC, _HF_DEC = r"transformer\.decoder\.layers\.(\d+)\.", r"model.decoder.layers.\1."
#: (original prefix, transformers prefix, ((original rest, transformers rest), ...)); the
#: first match wins, so a container's specific names come before its catch-all ("").
_RENAMES = (
    (_BLOCK, _HF_BLOCK, ((r"norm1\.", "layernorm_before."), (r"norm2\.", "layernorm_after."),
                         (r"attn\.proj\.", "attention.o_proj."), (r"mlp\.", "mlp."),
                         (r"attn\.relative_position_bias_table",
                          "attention.relative_position_bias.relative_position_bias_table"))),
    (r"backbone\.0\.", SWIN + "swin.", ((r"patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
                                         (r"patch_embed\.norm\.", "embeddings.norm."),
                                         (r"layers\.(\d+)\.downsample\.", r"encoder.layers.\1.downsample."))),
    (_ENC, _HF_ENC, ((r"self_attn\.", "self_attn."), (r"norm1\.", "self_attn_layer_norm."),
                     (r"linear(\d)\.", r"fc\2."), (r"norm2\.", "final_layer_norm."))),
    (_TEXT, _HF_TEXT, ((r"self_attn\.out_proj\.", "self_attn.out_proj."), (r"linear(\d)\.", r"fc\2."),
                       (r"norm1\.", "layer_norm_before."), (r"norm2\.", "layer_norm_after."))),
    (_FUSION, _HF_FUSION, ((r"gamma_v", "vision_param"), (r"gamma_l", "text_param"),
                           (r"layer_norm_v\.", "layer_norm_vision."), (r"layer_norm_l\.", "layer_norm_text."),
                           (r"attn\.(values_|out_)?v_proj\.", r"attn.\2vision_proj."),
                           (r"attn\.(values_|out_)?l_proj\.", r"attn.\2text_proj."))),
    (_DEC, _HF_DEC, ((r"cross_attn\.", "encoder_attn."), (r"norm1\.", "encoder_attn_layer_norm."),
                     (r"ca_text\.out_proj\.", "encoder_attn_text.out_proj."),
                     (r"catext_norm\.", "encoder_attn_text_layer_norm."),
                     (r"self_attn\.out_proj\.", "self_attn.out_proj."), (r"norm2\.", "self_attn_layer_norm."),
                     (r"linear(\d)\.", r"fc\2."), (r"norm3\.", "final_layer_norm."))),
    (r"transformer\.", "model.", ((r"level_embed", "level_embed"), (r"tgt_embed\.", "query_position_embeddings."),
                                  (r"enc_output\.", "enc_output."), (r"enc_output_norm\.", "enc_output_norm."),
                                  (r"enc_out_bbox_embed\.", "encoder_output_bbox_embed."),
                                  (r"decoder\.norm\.", "decoder.layer_norm."),
                                  (r"decoder\.ref_point_head\.", "decoder.reference_points_head."),
                                  (r"decoder\.bbox_embed\.", "decoder.bbox_embed."))),
    ("", "", ((r"bert\.", "model.text_backbone."), (r"feat_map\.", "model.text_projection."),
              (r"input_proj\.", "model.input_proj_vision."), (r"bbox_embed\.", "bbox_embed."))),
)
_SIMPLE_COMPILED = tuple((re.compile(prefix + rest), hf_prefix + hf_rest)
                         for prefix, hf_prefix, pairs in _RENAMES for rest, hf_rest in pairs)
_FUSED = (  # (original pattern of a fused q/k/v tensor, transformers prefix, the three names)
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
     SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.", ("q_proj", "k_proj", "v_proj")),
    (r"transformer\.encoder\.text_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)",
     r"model.encoder.layers.\1.text_enhancer_layer.self_attn.", ("query", "key", "value")),
    (r"transformer\.decoder\.layers\.(\d+)\.ca_text\.in_proj_(weight|bias)",
     r"model.decoder.layers.\1.encoder_attn_text.", ("query", "key", "value")),
    (r"transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)",
     r"model.decoder.layers.\1.self_attn.", ("query", "key", "value")),
)


class DinoConvertError(TeacherkitError):
    """An original Grounding DINO checkpoint whose tensors do not map one to one."""


def dropped(key: str) -> str | None:
    """Why ``key`` has no transformers counterpart, or None when it must have one."""
    return next((why for pattern, why in DROPPED.items() if re.fullmatch(pattern, key)), None)


def _stage_norm(key: str) -> str | None:
    # the Swin's per-output norms are numbered by stage (norm1..norm3 for stages 1..3 counted
    # from 0); transformers' backbone names its stages from 1 (stage2..stage4)
    m = re.fullmatch(r"backbone\.0\.norm(\d+)\.(weight|bias)", key)
    return f"{SWIN}hidden_states_norms.stage{int(m.group(1)) + 1}.{m.group(2)}" if m else None


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Every original tensor under its transformers name (fused projections split into
    three); tensors in :data:`DROPPED` are left out, any other unknown key is an error."""
    out: dict[str, Any] = {}
    unknown = []
    for key, tensor in state_dict.items():
        if dropped(key):
            continue
        if (new := _stage_norm(key)) is not None:
            out[new] = tensor
            continue
        for pattern, prefix, names in _FUSED:
            m = re.fullmatch(pattern, key)
            if m:
                kind = m.group(m.lastindex)
                base = m.expand(prefix)
                for name, part in zip(names, tensor.chunk(3, dim=0), strict=True):
                    out[f"{base}{name}.{kind}"] = part
                break
        else:
            for pattern, replacement in _SIMPLE_COMPILED:
                if pattern.match(key):
                    out[pattern.sub(replacement, key, count=1)] = tensor
                    break
            else:
                unknown.append(key)
    if unknown:
        raise DinoConvertError(f"tensors of no known Grounding DINO module: {', '.join(unknown[:5])}"
                               f"{' ...' if len(unknown) > 5 else ''}")
    return out


def check_mapping(converted: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Every expected tensor (but :data:`UNMATCHED`) is there with its shape and nothing is
    left over; else one error listing the first differences."""
    missing = sorted(set(expected) - set(converted) - set(UNMATCHED))
    extra = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(expected[k].shape) != tuple(converted[k].shape))
    if missing or extra or wrong:
        parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys]
        raise DinoConvertError(f"{where}: the Grounding DINO conversion does not map one to one ({'; '.join(parts)})")


# -- the architecture, read from the tensors ------------------------------------------------


@dataclass(frozen=True)
class DinoVariant:
    """What an original checkpoint was built with (all read from tensor shapes, but the
    attention heads and sampling points, which shapes only give as a product)."""

    swin_width: int
    depths: tuple[int, ...]
    swin_heads: tuple[int, ...]
    window_size: int
    out_indices: tuple[int, ...]
    d_model: int
    feature_levels: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    num_queries: int

    @property
    def name(self) -> str:
        return {96: "swin_t", 128: "swin_b", 192: "swin_l"}.get(self.swin_width, f"swin_{self.swin_width}")


def _count(state_dict: Mapping[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def detect_variant(state_dict: Mapping[str, Any], where: str) -> DinoVariant:
    """Read the architecture from tensor shapes; a tensor a Grounding DINO must have that is
    absent gives a :class:`DinoConvertError` naming it."""
    try:
        stages = _count(state_dict, r"backbone\.0\.layers\.(\d+)\.")
        depths = tuple(_count(state_dict, rf"backbone\.0\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages))
        table = "backbone.0.layers.{}.blocks.0.attn.relative_position_bias_table"
        tables = [state_dict[table.format(i)] for i in range(stages)]
        level_embed = state_dict["transformer.level_embed"]
        return DinoVariant(
            swin_width=int(state_dict["backbone.0.patch_embed.proj.weight"].shape[0]),
            depths=depths,
            swin_heads=tuple(int(t.shape[1]) for t in tables),
            window_size=(math.isqrt(int(tables[0].shape[0])) + 1) // 2,  # a (2w-1)^2 table
            out_indices=tuple(i + 1 for i in range(stages + 1) if f"backbone.0.norm{i}.weight" in state_dict),
            d_model=int(level_embed.shape[1]),
            feature_levels=int(level_embed.shape[0]),
            encoder_layers=_count(state_dict, r"transformer\.encoder\.layers\.(\d+)\."),
            decoder_layers=_count(state_dict, r"transformer\.decoder\.layers\.(\d+)\."),
            ffn_dim=int(state_dict["transformer.encoder.layers.0.linear1.weight"].shape[0]),
            num_queries=int(state_dict["transformer.tgt_embed.weight"].shape[0]),
        )
    except KeyError as exc:
        raise DinoConvertError(f"{where}: not a complete Grounding DINO checkpoint (no tensor {exc})") from None
    except IndexError:  # no stage at all
        raise DinoConvertError(f"{where}: not a complete Grounding DINO checkpoint (no Swin stages "
                               "backbone.0.layers.*)") from None


def hf_config(variant: DinoVariant, text_config: Mapping[str, Any], heads: int = 8, points: int = 4) -> Any:
    """transformers' ``GroundingDinoConfig`` of ``variant``. ``heads`` and ``points`` are
    the released models' (8 and 4; the tensors give only their product, which
    :func:`check_mapping` then holds to the checkpoint). The text enhancer and fusion
    layers use half the heads and half the feed-forward width in both implementations."""
    from transformers import GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=variant.swin_width, depths=list(variant.depths), num_heads=list(variant.swin_heads),
        window_size=variant.window_size, image_size=224 if variant.window_size == 7 else 384,
        out_indices=list(variant.out_indices), drop_path_rate=0.2,  # the original Swin's stochastic depth
    )
    config = GroundingDinoConfig(
        backbone_config=backbone.to_dict(), text_config=dict(text_config), num_queries=variant.num_queries,
        d_model=variant.d_model, num_feature_levels=variant.feature_levels,
        encoder_layers=variant.encoder_layers, decoder_layers=variant.decoder_layers,
        encoder_ffn_dim=variant.ffn_dim, decoder_ffn_dim=variant.ffn_dim,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_n_points=points,
        decoder_n_points=points, dropout=0.0,  # the released configs train without dropout
    )
    config.architectures = ["GroundingDinoForObjectDetection"]
    return config
