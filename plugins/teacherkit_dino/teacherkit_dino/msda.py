"""Multi-scale deformable attention without the dense intermediates, for frozen layers.

transformers computes deformable attention (Deformable DETR's sampling of a few points per
query and level) with one ``grid_sample`` per level, then stacks the samples of all levels
and points into one tensor of ``batch*heads × head_dim × queries × levels*points``, multiplies
it by the attention weights and sums. In Grounding DINO's encoder the queries are every
position of every feature level (about 22,000 per 800×1333 image), so at batch 8 that stacked
tensor holds about 720 M values per layer (2.9 GB in float32): the kernel time goes to writing,
copying and reducing it, not to arithmetic (see docs/performance.md).

Here one Triton program takes a block of queries of one image and one head and walks the levels
and points itself: for each sampling point it reads the four neighbouring value vectors
(bilinear taps, zero outside the map, the ``align_corners=False`` convention of ``grid_sample``)
and accumulates ``weight × tap`` in float32 registers. Nothing but the output is written.

The kernel has no backward pass. :func:`install` switches a model's deformable-attention
modules to a forward that takes it only when no input needs a gradient — the frozen encoder
of decoder-only LoRA, and all of prediction — and otherwise calls transformers' own code, so
what is learned does not change. It needs CUDA and Triton; anywhere else the module behaves
exactly as before. Tests run the kernel through Triton's CPU interpreter
(``TRITON_INTERPRET=1``) against transformers' implementation.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

try:  # Triton ships with CUDA builds of PyTorch; CPU-only machines usually lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None


def triton_available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _msda_forward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                             num_keys, num_queries,
                             HEADS: tl.constexpr, DIM: tl.constexpr, LEVELS: tl.constexpr,
                             POINTS: tl.constexpr, BLOCK_Q: tl.constexpr):
        # value (B, S, HEADS, DIM); loc (B, Q, HEADS, LEVELS, POINTS, 2) in [0, 1] (x, y);
        # attn (B, Q, HEADS, LEVELS, POINTS); out (B, Q, HEADS * DIM)
        block = tl.program_id(0)
        image = tl.program_id(1)
        head = tl.program_id(2)
        query = block * BLOCK_Q + tl.arange(0, BLOCK_Q)
        in_range = query < num_queries
        channel = tl.arange(0, DIM)
        acc = tl.zeros((BLOCK_Q, DIM), dtype=tl.float32)
        value_base = value_ptr + image.to(tl.int64) * num_keys * HEADS * DIM + head * DIM
        row = (image * num_queries + query).to(tl.int64) * HEADS + head  # (image, query, head)
        for level in tl.static_range(LEVELS):
            height = tl.load(shapes_ptr + 2 * level)
            width = tl.load(shapes_ptr + 2 * level + 1)
            start = tl.load(starts_ptr + level)
            for point in tl.static_range(POINTS):
                sample = (row * LEVELS + level) * POINTS + point
                loc_x = tl.load(loc_ptr + 2 * sample, mask=in_range, other=0.0).to(tl.float32)
                loc_y = tl.load(loc_ptr + 2 * sample + 1, mask=in_range, other=0.0).to(tl.float32)
                weight = tl.load(attn_ptr + sample, mask=in_range, other=0.0).to(tl.float32)
                # pixel coordinates of grid_sample(align_corners=False); clamp so the integer
                # conversion of a far-off point stays defined (such taps are zero anyway)
                x = tl.minimum(tl.maximum(loc_x * width - 0.5, -2.0), width + 1.0)
                y = tl.minimum(tl.maximum(loc_y * height - 0.5, -2.0), height + 1.0)
                x_floor = tl.floor(x)
                y_floor = tl.floor(y)
                frac_x = x - x_floor
                frac_y = y - y_floor
                x0 = x_floor.to(tl.int32)
                y0 = y_floor.to(tl.int32)
                for dy in tl.static_range(2):
                    for dx in tl.static_range(2):
                        xi = x0 + dx
                        yi = y0 + dy
                        wx = frac_x if dx == 1 else 1.0 - frac_x
                        wy = frac_y if dy == 1 else 1.0 - frac_y
                        inside = in_range & (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
                        key = (start + yi * width + xi).to(tl.int64)
                        taps = tl.load(value_base + key[:, None] * (HEADS * DIM) + channel[None, :],
                                       mask=inside[:, None], other=0.0).to(tl.float32)
                        acc += (wx * wy * weight)[:, None] * taps
        out = out_ptr + row[:, None] * DIM + channel[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=in_range[:, None])


def msda_forward(value: torch.Tensor, spatial_shapes: Any, level_start_index: Any,
                 sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                 block_queries: int = 64) -> torch.Tensor:
    """Deformable attention output ``(B, Q, heads*dim)`` by the Triton kernel.

    ``value`` (B, S, heads, dim), ``spatial_shapes`` (levels, 2) as (height, width),
    ``level_start_index`` (levels,), ``sampling_locations`` (B, Q, heads, levels, points, 2),
    ``attention_weights`` (B, Q, heads, levels, points). The result has the dtype both
    inputs promote to, as transformers' version returns under autocast.
    """
    if triton is None:
        raise RuntimeError("the Triton deformable-attention kernel needs the triton package")
    batch, keys, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    if dim & (dim - 1):
        raise ValueError(f"head dim {dim} is not a power of two")
    device = value.device
    shapes = torch.as_tensor(spatial_shapes, device=device).to(torch.int32).contiguous()
    starts = torch.as_tensor(level_start_index, device=device).to(torch.int32).contiguous()
    out_dtype = torch.promote_types(value.dtype, attention_weights.dtype)
    out = torch.empty((batch, queries, heads * dim), dtype=out_dtype, device=device)
    grid = (triton.cdiv(queries, block_queries), batch, heads)
    _msda_forward_kernel[grid](value.contiguous(), shapes, starts, sampling_locations.contiguous(),
                               attention_weights.contiguous(), out, keys, queries, HEADS=heads, DIM=dim,
                               LEVELS=levels, POINTS=points, BLOCK_Q=block_queries)
    return out


def _kernel_device(value: torch.Tensor) -> bool:
    """CUDA, or any device under Triton's interpreter (``TRITON_INTERPRET=1``, used by tests)."""
    return value.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class _Dispatch:
    """The forward :func:`install` puts on each deformable-attention module: the kernel when
    it applies, else the module's original forward (transformers')."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.original = module.forward
        self.calls = {"kernel": 0, "torch": 0}

    def __call__(self, value: torch.Tensor, value_spatial_shapes: torch.Tensor,
                 value_spatial_shapes_list: Any, level_start_index: torch.Tensor,
                 sampling_locations: torch.Tensor, attention_weights: torch.Tensor, *rest: Any) -> torch.Tensor:
        if _kernel_device(value) and not _needs_grad(value, sampling_locations, attention_weights):
            self.calls["kernel"] += 1
            return msda_forward(value, value_spatial_shapes, level_start_index, sampling_locations,
                                attention_weights)
        self.calls["torch"] += 1
        return self.original(value, value_spatial_shapes, value_spatial_shapes_list, level_start_index,
                             sampling_locations, attention_weights, *rest)


def _deformable_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "MultiScaleDeformableAttention"]


def install(model: torch.nn.Module, mode: str = "auto") -> int:
    """Route the frozen (no-gradient) deformable-attention calls of ``model`` to the kernel.

    ``mode``: ``"auto"`` installs when Triton is importable (the kernel then runs for CUDA
    tensors only); ``"torch"`` removes an installed dispatch. Returns how many modules now
    dispatch. The modules have no parameters, so state dicts and adapters do not change.
    """
    if mode not in ("auto", "torch"):
        raise ValueError(f"unknown deformable_attention mode {mode!r}")
    modules = _deformable_modules(model)
    if mode == "torch" or triton is None:
        for module in modules:
            if isinstance(module.__dict__.get("forward"), _Dispatch):
                del module.forward
        return 0
    for module in modules:
        if not isinstance(module.__dict__.get("forward"), _Dispatch):
            module.forward = _Dispatch(module)
    return len(modules)


#: transformers' switch for its ``torch_compilable_check`` runtime checks
_CHECKS_ENV = "TRANSFORMERS_DISABLE_TORCH_CHECK"


@contextlib.contextmanager
def shape_checks_off() -> Iterator[None]:
    """Skip transformers' runtime shape checks for the duration (its own switch,
    ``TRANSFORMERS_DISABLE_TORCH_CHECK``).

    The only such check on Grounding DINO's path compares, in every deformable-attention
    layer, the sum of the feature-level sizes (a tensor) with the sequence length: reading
    that tensor makes the host wait for the GPU twelve times per forward. Both sides are
    derived by the model from the same feature maps, so the check cannot fail in a model
    run as a whole; the environment is restored afterwards.
    """
    before = os.environ.get(_CHECKS_ENV)
    os.environ[_CHECKS_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_CHECKS_ENV, None)
        else:
            os.environ[_CHECKS_ENV] = before


def dispatch_counts(model: torch.nn.Module) -> dict[str, int]:
    """Calls taken by the kernel and by transformers' code since :func:`install` (for tests
    and the benchmark)."""
    totals = {"kernel": 0, "torch": 0}
    for module in _deformable_modules(model):
        dispatch = module.__dict__.get("forward")
        if isinstance(dispatch, _Dispatch):
            for key, count in dispatch.calls.items():
                totals[key] += count
    return totals
