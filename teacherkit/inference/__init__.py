"""Using trained teachers: load an experiment, predict, pseudo-label, export.

``from teacherkit.inference import load_experiment`` is the entry point; imports are lazy
so the CLI stays light."""

from __future__ import annotations

from typing import Any

__all__ = ["Experiment", "LoadedTeacher", "load_experiment"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(name)
    from teacherkit.inference import experiment

    return getattr(experiment, name)
