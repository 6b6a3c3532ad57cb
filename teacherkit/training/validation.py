"""Scoring the validation set once per epoch, on every process, without disturbing training.

Each process predicts its shard; the predictions are gathered, the main process scores
them, and the metrics are broadcast so every process sees the same row (and takes the
same early-stopping decision). The RNG states are put back afterwards, so evaluating
does not shift the training stream (a resumed run matches an uninterrupted one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teacherkit.training.checkpoint import capture_rng_state, restore_rng_state
from teacherkit.training.dataset import EpochSampler, move_to_device

if TYPE_CHECKING:
    from teacherkit.training.loop import TeacherLoop


def validation_metrics(loop: TeacherLoop, val_set: Any, evaluate: Any) -> dict[str, Any]:
    """Metrics of the loop's model on ``val_set`` (``evaluate(predictions) -> metrics``),
    plus ``val_loss`` when the teacher is not scored or the loss is monitored."""
    return validate(loop, val_set, evaluate)[0]


def validate(loop: TeacherLoop, val_set: Any, evaluate: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(metrics, predictions)``: the metrics as :func:`validation_metrics`, the same on
    every process; the predictions of the whole set (each image once) on the main process,
    for the pictures of :mod:`teacherkit.reporting`, and ``[]`` elsewhere."""
    from accelerate.utils import broadcast_object_list

    acc = loop.acc
    want_loss = loop.teacher.spec.evaluation == "none" or loop.s.monitor == "val_loss"
    rng = capture_rng_state()
    try:
        predictions, loss_sum, loss_count = _predict(loop, val_set, want_loss)
    finally:
        restore_rng_state(rng)
        loop.model.train()
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        predictions = gather_object(predictions)
        losses = gather_object([(loss_sum, loss_count)])
        loss_sum, loss_count = sum(x[0] for x in losses), sum(x[1] for x in losses)
    metrics: dict[str, Any] = {}
    unique: list[dict[str, Any]] = []
    if acc.is_main_process:
        unique = dedupe(predictions)
        metrics = evaluate(unique)
        if want_loss:
            metrics["val_loss"] = loss_sum / max(loss_count, 1)
    if acc.num_processes > 1:
        box = [metrics]
        broadcast_object_list(box, from_process=0)
        metrics = box[0]
    return metrics, unique


def _predict(loop: TeacherLoop, val_set: Any, want_loss: bool) -> tuple[list[dict[str, Any]], float, int]:
    import torch

    acc, model = loop.acc, loop.model
    # built at the first evaluation (epoch 0) and reused by every later one, workers and all
    loader = loop.loaders.get("val", val_set, loop.s.batch_size, lambda: EpochSampler(
        len(val_set), seed=0, shuffle=False, rank=acc.process_index, world_size=acc.num_processes))
    model.eval()
    predictions: list[dict[str, Any]] = []
    loss_sum, loss_count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch = move_to_device(batch, acc.device)
            with acc.autocast():
                if want_loss:
                    loss_sum += float(loop.loss_fn(loop.teacher.forward(model, batch), batch)["loss"])
                    loss_count += 1
                for per_image in loop.teacher.predict(model, batch):
                    predictions.extend(per_image)
    return predictions, loss_sum, loss_count


def dedupe(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Padding of the last shard repeats images across ranks; keep one copy of each."""
    seen: set[Any] = set()
    out = []
    for pred in predictions:
        key = (pred.get("image_id"), pred.get("annotation_id"), tuple(pred.get("bbox", ()) or ()),
               pred.get("category_id"), pred.get("score"))
        if key in seen:
            continue
        seen.add(key)
        out.append(pred)
    return out
