"""Where things live in an experiment folder: one object, so the trainer that writes a
folder and the code that reads it back (evaluate, label, export, report) cannot disagree.

```
<root>/teacher_config.yaml          resolved config
<root>/metadata.json                versions, fingerprints, status, final metrics
<root>/dataset_info.json            classes, category id -> contiguous index
<root>/.teacherkit                  marker: this folder was written by teacherkit
<root>/teachers/<name>/adapter/     what the user keeps
<root>/teachers/<name>/base/        base weights that cannot be re-obtained by name
<root>/teachers/<name>/checkpoints/{best,last}/
<root>/teachers/<name>/results.csv, results.png, curves.json, pictures/
<root>/report.html, evaluation.json
<root>/logs/<name>/                 trackers
<root>/plots/<name>.png
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "teacher_config.yaml"
METADATA_FILE = "metadata.json"
DATASET_INFO_FILE = "dataset_info.json"
MARKER_FILE = ".teacherkit"


@dataclass(frozen=True)
class TeacherLayout:
    """The paths of one teacher inside an experiment."""

    root: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.root / "teachers" / self.name

    @property
    def adapter(self) -> Path:
        return self.dir / "adapter"

    @property
    def base(self) -> Path:
        return self.dir / "base"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last"

    @property
    def results_csv(self) -> Path:
        return self.dir / "results.csv"

    @property
    def results_png(self) -> Path:
        return self.dir / "results.png"

    @property
    def pictures(self) -> Path:
        return self.dir / "pictures"

    @property
    def curves_json(self) -> Path:
        return self.dir / "curves.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs" / self.name

    @property
    def plot(self) -> Path:
        return self.root / "plots" / f"{self.name}.png"


@dataclass(frozen=True)
class ExperimentLayout:
    """The paths of an experiment folder (nothing is created by building one)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def metadata(self) -> Path:
        return self.root / METADATA_FILE

    @property
    def dataset_info(self) -> Path:
        return self.root / DATASET_INFO_FILE

    @property
    def marker(self) -> Path:
        return self.root / MARKER_FILE

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def teachers_dir(self) -> Path:
        return self.root / "teachers"

    def teacher(self, name: str) -> TeacherLayout:
        return TeacherLayout(self.root, name)

    def teacher_names(self) -> list[str]:
        """Teachers that have a folder here, sorted."""
        if not self.teachers_dir.is_dir():
            return []
        return sorted(p.name for p in self.teachers_dir.iterdir() if p.is_dir())
