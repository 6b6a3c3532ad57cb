"""Using trained teachers: load an experiment, predict, pseudo-label, export."""

from teacherkit.inference.experiment import Experiment, LoadedTeacher, load_experiment

__all__ = ["Experiment", "LoadedTeacher", "load_experiment"]
