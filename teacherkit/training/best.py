"""Make ``best`` agree with the record in ``last`` when a run resumes.

The checkpoint hook commits ``best`` (and the adapter) before the ``last`` that names it,
so a kill leaves at worst a ``best`` one epoch ahead of the record, which the resumed run
redoes. What a kill cannot leave but a full disk or a hand can (``best`` missing, or from
another epoch) is repaired here, and said: re-created when ``last`` is that epoch, adopted
when it is an earlier epoch of this run's history, otherwise forgotten so the epochs still
to run pick the best again. Never a record that points at nothing.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from teacherkit.atomic import atomic_dir
from teacherkit.training.checkpoint import load_checkpoint, read_meta

if TYPE_CHECKING:
    from teacherkit.layout import TeacherLayout
    from teacherkit.training.loop import TeacherLoop


def reconcile_best(loop: TeacherLoop, layout: TeacherLayout) -> None:
    """Repair ``best`` against ``loop.stopping`` (just restored from ``last``); every
    process ends with the same early-stopping record."""
    if loop.acc.is_main_process:
        note = _reconcile(loop, layout)
        if note:
            loop.reporter.warn(f"{loop.teacher.spec.name}: {note}")
    if loop.acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [loop.stopping.state_dict()]
        broadcast_object_list(box, from_process=0)
        loop.stopping.load_state_dict(box[0])
    loop.acc.wait_for_everyone()


def _reconcile(loop: TeacherLoop, layout: TeacherLayout) -> str | None:
    stopping, state = loop.stopping, loop.state
    recorded = stopping.best_epoch
    meta = read_meta(layout.best)
    on_disk = meta.get("epoch") if meta and not meta.get("batch") else None
    if on_disk is not None and on_disk == recorded:
        if not _has_files(layout.adapter):
            _adapter_from_best(loop, layout)
            return f"the adapter of the best epoch {recorded} was missing; re-created from {layout.best}"
        return None
    if recorded is not None and recorded == state.epoch and state.batch == 0:
        with atomic_dir(layout.best) as tmp:  # last is the recorded best epoch: copy it
            shutil.copytree(layout.last, tmp, dirs_exist_ok=True)
        _save_adapter(loop, layout)
        return f"the best checkpoint (epoch {recorded}) was missing; re-created from {layout.last}, the same epoch"
    value = _metric_of(state.history, on_disk, loop.s.monitor) if on_disk is not None else None
    if value is not None and on_disk <= state.epoch:
        stopping.best, value, on_disk, state.epoch - on_disk
        _adapter_from_best(loop, layout)
        return (f"the recorded best epoch {recorded} has no checkpoint; {layout.best} holds epoch {on_disk}, "
                f"which is now the best")
    if recorded is None:
        return None  # a best from an epoch being redone: the redo writes it again
    stopping.forget_best()
    remaining = "the epochs still to run pick it again" if not state.finished else "this run has no best now"
    return f"the best checkpoint of epoch {recorded} is missing from {layout.best}; {remaining}"


def _metric_of(history: list[dict[str, Any]], epoch: int, monitor: str) -> float | None:
    rows = [row for row in history if row.get("epoch") == epoch]
    value = rows[-1].get(monitor) if rows else None
    return float(value) if isinstance(value, (int, float)) else None


def _has_files(folder: Any) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _save_adapter(loop: TeacherLoop, layout: TeacherLayout) -> None:
    with atomic_dir(layout.adapter) as tmp:
        loop.teacher.save_adapter(tmp)


def _adapter_from_best(loop: TeacherLoop, layout: TeacherLayout) -> None:
    """Write the adapter of the weights in ``best``, then put the resumed weights back."""
    teacher = loop.teacher
    current = {name: tensor.clone() for name, tensor in teacher.trainable_state_dict().items()}
    best, _state, _meta = load_checkpoint(layout.best)
    teacher.load_trainable_state_dict(best)
    try:
        _save_adapter(loop, layout)
    finally:
        teacher.load_trainable_state_dict(current)
