"""``--batch-size auto``: the largest batch of a teacher's training samples that fits.

:func:`largest_fitting_batch` doubles from 1 until a size fails, then bisects between the
last size that fitted and the first that did not; :func:`probe_batch` is one try (forward
and backward of real samples with the real loss), :func:`search_batch_size` runs the
search for one teacher on the training device.

Nothing here imports torch at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teacherkit.out_of_memory import is_out_of_memory, release_memory

#: The largest batch ``--batch-size auto`` tries.
AUTO_BATCH_LIMIT = 512


@dataclass
class BatchSearch:
    """The outcome of :func:`largest_fitting_batch`: the size chosen and every try."""

    chosen: int
    tried: list[tuple[int, bool]] = field(default_factory=list)

    def describe(self) -> str:
        return ", ".join(f"{n} {'fits' if ok else 'out of memory'}" for n, ok in self.tried)


def largest_fitting_batch(fits: Callable[[int], bool], limit: int) -> BatchSearch:
    """The largest batch size in ``[1, limit]`` that ``fits``, assuming a size that fails
    makes every larger one fail. ``chosen`` is 0 when not even 1 fits."""
    search = BatchSearch(chosen=0)

    def attempt(size: int) -> bool:
        ok = fits(size)
        search.tried.append((size, ok))
        return ok

    if not attempt(1):
        return search
    good, bad = 1, None
    while bad is None and good < limit:
        size = min(2 * good, limit)
        good, bad = (size, None) if attempt(size) else (good, size)
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if attempt(middle) else (good, middle)
    search.chosen = good
    return search


def probe_batch(teacher: Any, loss_fn: Any, dataset: Any, device: Any, autocast: Any, size: int) -> bool:
    """One forward and backward of ``size`` real training samples (repeated when the set is
    smaller); whether it fitted. Gradients, buffers (batch-norm statistics) and the RNG are
    left as they were, so the search does not change the run that follows."""
    import torch

    from teacherkit.training.dataset import move_to_device

    model = teacher.model
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    fitted = True
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            batch = dataset.preprocessor.collate([dataset[i % len(dataset)] for i in range(size)])
            batch = move_to_device(batch, device)
            model.train()
            with autocast():
                losses = loss_fn(teacher.forward(model, batch), batch)
            losses["loss"].backward()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        fitted = False
    finally:
        batch = losses = None  # drop the activations before emptying the cache
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        model.train(was_training)
        release_memory(device)
    return fitted


def search_batch_size(teacher: Any, loss_fn: Any, dataset: Any, accelerator: Any) -> BatchSearch:
    """``--batch-size auto`` for one teacher: the largest batch of its training samples
    whose forward and backward fit on this process's device, with room for the optimizer
    held. Every process trains with the smallest size any of them found."""
    import math

    device = accelerator.device
    teacher.model.to(device)
    limit = max(1, min(AUTO_BATCH_LIMIT, math.ceil(len(dataset) / accelerator.num_processes)))
    room = optimizer_room(teacher.model)
    try:
        search = largest_fitting_batch(
            lambda size: probe_batch(teacher, loss_fn, dataset, device, accelerator.autocast, size), limit)
    finally:
        room.clear()
        release_memory(device)
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        search.chosen = min(gather_object([search.chosen]))
    if device.type == "cuda":  # the epoch rows report training's peak, not the search's
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    return search


def optimizer_room(model: Any) -> list[Any]:
    """Two zero tensors per trainable weight, held during the search: the room AdamW's
    moments will take once training starts."""
    import torch

    return [torch.zeros_like(p) for p in model.parameters() if p.requires_grad for _ in range(2)]
