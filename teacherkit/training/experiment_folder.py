"""Creating, replacing and resuming an experiment folder without touching what is not ours.

Every folder ``train`` writes carries a marker file (:data:`teacherkit.layout.MARKER_FILE`,
naming the project and its version). ``--overwrite`` replaces only a folder with that
marker, and even then deletes only the paths :class:`~teacherkit.layout.ExperimentLayout`
names (with the ``.old`` and temporary siblings :mod:`teacherkit.atomic` makes): a
notebook or a note a user put next to the results stays.

:func:`check_output_dir` only reads and runs before any input is loaded (a refusal costs
nothing); :func:`prepare_output_dir` runs under the experiment lock, once every input is
checked, and is the first step that changes anything.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from teacherkit.atomic import OLD_SUFFIX, atomic_write_json
from teacherkit.errors import DataError, OutputExistsError
from teacherkit.layout import CONFIG_FILE, MARKER_FILE, ExperimentLayout, TeacherLayout
from teacherkit.training.experiment_lock import LOCK_FILE

PROJECT = "teacherkit"


def write_marker(layout: ExperimentLayout) -> None:
    from teacherkit import __version__

    atomic_write_json(layout.marker, {"project": PROJECT, "version": __version__,
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2)


def has_marker(layout: ExperimentLayout) -> bool:
    """Whether the folder carries a teacherkit marker (a file naming the project)."""
    try:
        data = json.loads(layout.marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("project") == PROJECT


def _entries(root: Path) -> list[Path]:
    """What the folder holds, not counting a lock file (a lock alone is no content)."""
    return [p for p in root.iterdir() if p.name != LOCK_FILE]


def check_output_dir(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse before any work: ``--resume`` needs an experiment; an existing non-empty
    folder needs ``--resume`` or ``--overwrite``; ``--overwrite`` needs the marker."""
    layout = ExperimentLayout(output)
    if layout.root.exists() and not layout.root.is_dir():
        raise DataError(f"--output {layout.root}: is a file, expected a folder")
    if resume:
        if not layout.config.is_file():
            raise DataError(f"--resume: {layout.root} is not a teacherkit experiment (no {CONFIG_FILE})")
        return
    if not layout.root.exists() or not _entries(layout.root):
        return
    if not overwrite:
        raise OutputExistsError(
            f"output folder {layout.root} already exists; use --resume to continue it or --overwrite to replace it")
    if not has_marker(layout):
        raise OutputExistsError(
            f"--overwrite: {layout.root} is not empty and has no {MARKER_FILE} marker, so it is not a folder "
            f"teacherkit created; refusing to delete it")


def prepare_output_dir(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Make ``output`` ready for this run (call it holding the experiment lock): checked
    again (the folder may have changed while the inputs loaded), the old experiment's
    own files removed on ``--overwrite``, the marker written."""
    check_output_dir(output, resume=resume, overwrite=overwrite)
    layout = ExperimentLayout(output)
    if overwrite and not resume and layout.root.exists():
        remove_experiment_files(layout)
    layout.root.mkdir(parents=True, exist_ok=True)
    write_marker(layout)


def _layout_paths(obj: Any) -> list[Path]:
    """Every path a layout object names (its ``Path`` properties)."""
    out = []
    for name, attr in vars(type(obj)).items():
        if isinstance(attr, property):
            value = getattr(obj, name)
            if isinstance(value, Path):
                out.append(value)
    return out


def _teacher_names(layout: ExperimentLayout) -> set[str]:
    """Teachers that left something: a teacher folder, a log folder or a plot."""
    probe = layout.teacher("_")
    names = set(layout.teacher_names())
    for folder, pick in ((probe.logs.parent, lambda p: p.is_dir()), (probe.plot.parent, lambda p: p.is_file())):
        if folder.is_dir():
            names.update(p.name.removesuffix(probe.plot.suffix) if not p.is_dir() else p.name
                         for p in folder.iterdir() if pick(p))
    return names


def project_paths(layout: ExperimentLayout) -> tuple[list[Path], list[Path]]:
    """``(leaves, containers)``: the paths teacherkit writes whole (files and folders such as
    ``adapter`` or ``checkpoints/last``) and the folders that only hold them (``teachers``,
    ``teachers/<name>``, ``checkpoints``, ``logs``, ``plots``), deepest first."""
    placeholder = TeacherLayout(layout.root, "\0")  # shows the containers even with no teacher present
    named = [p for p in _layout_paths(layout) if p != layout.marker]
    for name in sorted(_teacher_names(layout)):
        named.extend(_layout_paths(layout.teacher(name)))
    every = named + _layout_paths(placeholder)
    containers = {p for p in every if any(p in q.parents for q in every)}
    for path in every:  # folders above a leaf (logs/, plots/) hold only what we put there
        containers.update(a for a in path.parents if layout.root in a.parents)
    leaves = [p for p in named if p not in containers]
    ordered = sorted((c for c in containers if "\0" not in str(c)), key=lambda p: len(p.parts), reverse=True)
    return leaves, ordered


def remove_experiment_files(layout: ExperimentLayout) -> list[Path]:
    """Delete what teacherkit wrote into ``layout.root`` (not the marker, not the lock, not
    anything else); empty folders of ours go too. Returns the paths left that are not ours."""
    leaves, containers = project_paths(layout)
    for leaf in leaves:
        siblings = [leaf, leaf.with_name(leaf.name + OLD_SUFFIX)]
        if leaf.parent.is_dir():  # an atomic write a kill interrupted (teacherkit.atomic's names)
            siblings.extend(leaf.parent.glob(f".{leaf.name}.*.tmp"))
        for path in siblings:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    for folder in containers:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return [p for p in layout.root.iterdir() if p.name not in (MARKER_FILE, LOCK_FILE)]
