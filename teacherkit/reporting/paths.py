"""Where the pictures and tables of one teacher live inside an experiment.

Kept here until :class:`teacherkit.layout.TeacherLayout` names them; every writer and
reader (training hooks, ``teacherkit report``) goes through this one object.

```
teachers/<name>/results.csv               one row per epoch (epoch 0 = the base, when evaluated)
teachers/<name>/results.png               losses, lr, each metric over epochs
teachers/<name>/pictures/predictions_{last,best}.png (+ .json: which images, which epoch)
teachers/<name>/pictures/{pr_curve,f1_curve,confusion_matrix}.png      box teachers
teachers/<name>/pictures/{iou_histogram,iou_per_class}.png             mask teachers
teachers/<name>/curves.json               numbers behind the curves; ``best_threshold``
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The picture files a teacher may have, in the order the report shows them.
CURVE_PICTURES = ("pr_curve", "f1_curve", "confusion_matrix", "iou_histogram", "iou_per_class")
GRID_TAGS = ("best", "last")


@dataclass(frozen=True)
class ReportPaths:
    """The report files of the teacher whose folder is ``teacher_dir``."""

    teacher_dir: Path

    @classmethod
    def of(cls, experiment: Path, teacher: str) -> ReportPaths:
        return cls(Path(experiment) / "teachers" / teacher)

    @property
    def results_csv(self) -> Path:
        return self.teacher_dir / "results.csv"

    @property
    def results_png(self) -> Path:
        return self.teacher_dir / "results.png"

    @property
    def pictures(self) -> Path:
        return self.teacher_dir / "pictures"

    def grid(self, tag: str) -> Path:
        return self.pictures / f"predictions_{tag}.png"

    def grid_info(self, tag: str) -> Path:
        return self.pictures / f"predictions_{tag}.json"

    def curve(self, name: str) -> Path:
        return self.pictures / f"{name}.png"

    @property
    def curves_json(self) -> Path:
        return self.teacher_dir / "curves.json"
