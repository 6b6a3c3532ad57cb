"""The pictures of one evaluation, written where the report finds them: a prediction grid
(``last`` every time, ``best`` too when the caller says the model is the best so far) and,
for the best, the curves (:mod:`teacherkit.reporting.curves`).

Training's evaluation hook calls it once per epoch; ``teacherkit evaluate`` can call it
with tags ``base`` and ``tuned``. Teachers scored neither as boxes nor as prompted masks get
no pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.atomic import atomic_write_bytes, atomic_write_json
from teacherkit.reporting.paths import ReportPaths

#: ``TeacherSpec.evaluation`` kinds that have pictures.
PICTURED = ("bbox", "prompted_mask")
#: Display threshold of box grids before any F1 curve exists.
DEFAULT_BOX_THRESHOLD = 0.25


def png_bytes(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


class EvaluationPictures:
    """Pictures of the predictions of one teacher over one ground-truth file.

    :param paths: where they go.
    :param gt: the COCO dict the predictions are scored against.
    :param images_dir: folder its ``file_name`` values are relative to.
    :param kind: the teacher's evaluation kind (``"bbox"`` or ``"prompted_mask"``).
    :param title: shown on each picture (the teacher's name).
    """

    def __init__(self, paths: ReportPaths, gt: dict[str, Any], images_dir: Path, kind: str, title: str) -> None:
        self.paths, self.gt, self.images_dir = paths, gt, Path(images_dir)
        self.kind, self.title = kind, title
        self._samples: list[Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.kind in PICTURED and bool(self.gt.get("images"))

    def samples(self) -> list[Any]:
        """The grid's images, loaded once (the same seeded choice every epoch)."""
        from teacherkit.reporting.grids import load_samples, pick_indices

        if self._samples is None:
            self._samples = load_samples(self.gt, self.images_dir, pick_indices(len(self.gt["images"])))
        return self._samples

    def write(self, predictions: Sequence[dict[str, Any]], *, tag: str = "last", best: bool = False,
              epoch: int | None = None) -> np.ndarray | None:
        """Write the grid as ``tag`` (and ``best`` when ``best``), the curves when ``best``;
        returns the grid's pixels (for TensorBoard), or ``None`` for a teacher without pictures."""
        from teacherkit.reporting.curves import write_box_curves, write_mask_curves
        from teacherkit.reporting.grids import prediction_grid
        from teacherkit.reporting.matching import f1_curve

        if not self.enabled:
            return None
        masks = self.kind == "prompted_mask"
        threshold = 0.0 if masks else f1_curve(self.gt, predictions)["best_threshold"]
        if not masks and threshold <= 0.0:
            threshold = DEFAULT_BOX_THRESHOLD  # no detection is right yet: show only the confident ones
        where = f"epoch {epoch}" if epoch is not None else tag
        # ">=": PIL's default font has no \u2265
        caption = f"{self.title}, {where}" + ("" if masks else f", score >= {threshold:.2f}")
        image, layout = prediction_grid(self.samples(), predictions, categories=self.gt.get("categories", []),
                                        masks=masks, threshold=threshold, title=caption)
        data, info = png_bytes(image), {**layout, "epoch": epoch, "kind": self.kind}
        for name in (tag, "best") if best and tag != "best" else (tag,):
            atomic_write_bytes(self.paths.grid(name), data)
            atomic_write_json(self.paths.grid_info(name), {**info, "tag": name}, indent=1)
        if best:
            write = write_mask_curves if masks else write_box_curves
            write(self.paths, self.gt, predictions, title=self.title, epoch=epoch)
        return np.asarray(image)
