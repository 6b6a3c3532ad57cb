"""The score cut of ``teacherkit label``: ``--score-threshold 0.3`` for every class,
``--score-threshold cat=0.4,dog=0.2`` per class (by name), or both (``0.3,cat=0.4``).

Without a number for every class, the default is the best-F1 confidence that training
recorded on val for the box teacher (``teachers/<box teacher>/curves.json``,
``best_threshold``), when there is one; else there is no cut. The cut applies to the box
teacher's ``score``, before SAM is prompted, so SAM only segments boxes that are kept.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teacherkit.errors import TeacherkitError

FLAG = "--score-threshold"


@dataclass
class ScoreThresholds:
    """Minimum score per class id; ``default`` for classes not named (``None``: no cut)."""

    default: float | None = None
    default_from: str | None = None  # where ``default`` came from: the flag, or the curves.json it was read from
    per_class: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # class id -> name, for the record

    def cut(self, category_id: int) -> float | None:
        return self.per_class.get(int(category_id), self.default)

    def keeps(self, detection: dict[str, Any]) -> bool:
        cut = self.cut(detection["category_id"])
        return cut is None or float(detection["score"]) >= cut

    @property
    def active(self) -> bool:
        return self.default is not None or bool(self.per_class)

    def record(self) -> dict[str, Any]:
        """What the output's ``info`` says about the cut."""
        return {"default": self.default, "default_from": self.default_from,
                "per_class": {self.names.get(k, str(k)): v for k, v in sorted(self.per_class.items())}}


def _fraction(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TeacherkitError(f"{FLAG} {where}: {text!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise TeacherkitError(f"{FLAG} {where}: {text} must be in [0, 1]")
    return value


def parse_score_threshold(spec: str | None, categories: list[dict[str, Any]]) -> ScoreThresholds:
    """``spec`` as given on the command line (``None``: not given), against the
    experiment's categories.

    :raises TeacherkitError: a value outside [0, 1], an unknown class (the valid names are
        listed), a class named twice, or two bare numbers.
    """
    names = {int(c["id"]): str(c["name"]) for c in categories}
    result = ScoreThresholds(names=names)
    if spec is None:
        return result
    by_name = {name: cid for cid, name in names.items()}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" not in part:
            if result.default_from is not None:
                raise TeacherkitError(f"{FLAG} {spec!r}: one number for all classes at most")
            result.default, result.default_from = _fraction(part, repr(spec)), FLAG
            continue
        name, _, value = (s.strip() for s in part.partition("="))
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TeacherkitError(f"{FLAG} {name!r}: not a class of this experiment{hint}; classes: "
                                  f"{', '.join(by_name)}")
        if by_name[name] in result.per_class:
            raise TeacherkitError(f"{FLAG} {spec!r}: class {name!r} is given twice")
        result.per_class[by_name[name]] = _fraction(value, repr(name))
    return result


def with_recorded_default(thresholds: ScoreThresholds, teacher_dir: Path) -> ScoreThresholds:
    """``thresholds`` with the recorded best-F1 confidence as the default when no number
    for all classes was given and training recorded one."""
    from teacherkit.reporting.curves import recorded_threshold
    from teacherkit.reporting.paths import ReportPaths

    if thresholds.default_from is not None:
        return thresholds
    value = recorded_threshold(teacher_dir)
    if value is not None:
        thresholds.default = value
        thresholds.default_from = str(ReportPaths(Path(teacher_dir)).curves_json)
    return thresholds


def resolve_score_thresholds(experiment: Any, spec: str | None) -> ScoreThresholds:
    """The cut ``label`` applies: ``spec`` over the recorded default of the experiment's
    box teacher."""
    thresholds = parse_score_threshold(spec, list(experiment.info.categories))
    teacher_dir = experiment.layout.teacher(experiment.box_teacher_name("labelling")).dir
    return with_recorded_default(thresholds, teacher_dir)


def describe_default(thresholds: ScoreThresholds) -> str | None:
    """The one stderr line naming a default read from the experiment (``None`` otherwise)."""
    if thresholds.default is None or thresholds.default_from in (None, FLAG):
        return None
    return (f"score threshold {thresholds.default:g} (best F1 on val, from {thresholds.default_from}); "
            f"set another with {FLAG}")
