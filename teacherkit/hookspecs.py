"""Every hook teacherkit calls, in one module.

Plugins implement these with ``@teacherkit.hookimpl``. Each spec says when it is
called, what its arguments are, what to return and how results from several
plugins combine. Heavy types sit under ``TYPE_CHECKING`` so importing this module
costs nothing (``teacherkit --help`` must stay fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pathlib import Path

    import typer

    from teacherkit.config import AugmentationConfig, TeacherConfig
    from teacherkit.convert import BaseLocation
    from teacherkit.data.coco import CocoDataset
    from teacherkit.data.info import DatasetInfo
    from teacherkit.plugins import PluginHost
    from teacherkit.teachers import (
        Augmentation,
        CharacteristicSpec,
        LossFn,
        Preprocessor,
        Teacher,
        TeacherSpec,
    )

PROJECT_NAME = "teacherkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------------------
# Dataset inspection
# --------------------------------------------------------------------------------------


@hookspec
def teacherkit_detect_annotations(dataset: CocoDataset) -> list[str]:
    """Name the annotation kinds present in a loaded COCO dataset.

    Called once by :func:`teacherkit.inspect_dataset` for every dataset it inspects.

    :param dataset: the loaded dataset (:class:`teacherkit.data.coco.CocoDataset`).
        ``dataset.annotations`` is a sequence whose items expose ``bbox``,
        ``segmentation``, ``keypoints`` and ``num_keypoints`` (``None`` when absent);
        ``dataset.images`` and ``dataset.categories`` likewise.
    :return: the kinds this plugin recognises in the data, for example
        ``["boxes", "masks"]``; an empty list when it sees none.

    Results from all plugins are combined as a set union, so two plugins may both
    report ``"boxes"``.
    """


# --------------------------------------------------------------------------------------
# Teacher declaration and construction
# --------------------------------------------------------------------------------------


@hookspec
def teacherkit_register_teachers() -> list[TeacherSpec]:
    """Declare the teachers this plugin provides.

    Called whenever the set of available teachers is needed (inspection, config
    building, ``teacherkit plugins``).

    :return: a list of :class:`teacherkit.teachers.TeacherSpec`; each names the
        teacher, the annotation kind it learns from and its pydantic config section.

    All plugins' lists are concatenated; two plugins declaring the same teacher name
    is an error reported at start-up.
    """


@hookspec(firstresult=True)
def teacherkit_load_model(
    teacher: TeacherSpec, config: TeacherConfig, dataset_info: DatasetInfo, workdir: Path | None
) -> Teacher | None:
    """Build the model for ``teacher``, ready to train (LoRA applied) or to predict.

    Called once per teacher at the start of training, evaluation and labelling.

    :param teacher: the spec of the teacher to build.
    :param config: that teacher's resolved config section (an instance of
        ``teacher.config_model``).
    :param dataset_info: facts about the training data (classes, category mapping).
    :param workdir: a :class:`pathlib.Path` the loader may write to (for example to
        save the generated base weights of the ``tiny`` preset), or ``None``.
    :return: a :class:`teacherkit.teachers.Teacher`, or ``None`` when this plugin does
        not provide ``teacher``.

    Stops at the first non-``None`` result.
    """


@hookspec(firstresult=True)
def teacherkit_check_base(teacher: TeacherSpec, config: TeacherConfig) -> BaseLocation | None:
    """Say where ``teacher``'s base weights are, without loading them.

    Called for each selected teacher after the config is resolved and before the output
    folder is prepared, so a missing base stops ``train`` before it writes anything.
    Must be cheap: look for files, do not build the model.

    :param teacher: the spec of the selected teacher.
    :param config: that teacher's resolved config section.
    :return: a :class:`teacherkit.convert.BaseLocation` (its ``random_weights`` is true
        for the ``tiny`` preset), or ``None`` when this plugin does not provide
        ``teacher``. Raise a :class:`teacherkit.errors.TeacherkitError` naming the model,
        where it looked and how to provide it when the base cannot be found.

    Stops at the first non-``None`` result. A teacher whose plugin does not implement
    it is not checked early (its ``teacherkit_load_model`` reports a missing base).
    """


@hookspec(firstresult=True)
def teacherkit_make_preprocessor(
    teacher: TeacherSpec, config: TeacherConfig, model: Teacher
) -> Preprocessor | None:
    """Build the preprocessor that turns a raw sample into model inputs.

    Called once per teacher after :func:`teacherkit_load_model`.

    :param teacher: the spec of the teacher.
    :param config: that teacher's resolved config section.
    :param model: the built teacher (gives access to its processor settings).
    :return: a :class:`teacherkit.teachers.Preprocessor` (callable on one
        :class:`teacherkit.types.Sample` plus a ``collate`` method), or ``None`` when
        this plugin does not handle ``teacher``.

    Stops at the first non-``None`` result. A built-in ``trylast`` implementation
    answers with ``model.make_preprocessor()`` when the teacher has that method, so a
    teacher plugin need not implement this hook; a plugin overrides a teacher's own
    preprocessor by marking its implementation ``tryfirst=True``.
    """


@hookspec(firstresult=True)
def teacherkit_make_loss(teacher: TeacherSpec, config: TeacherConfig, model: Teacher) -> LossFn | None:
    """Build the training loss of a teacher.

    Called once per teacher after :func:`teacherkit_load_model`.

    :param teacher: the spec of the teacher.
    :param config: that teacher's resolved config section.
    :param model: the built teacher.
    :return: a callable ``loss(outputs, batch) -> dict[str, Tensor]`` whose ``"loss"``
        entry is the scalar to minimise and whose other entries are components for
        logging, or ``None`` when this plugin does not handle ``teacher``.

    Stops at the first non-``None`` result. A built-in ``trylast`` implementation
    answers with ``model.make_loss()`` when the teacher has that method, so a teacher
    plugin need not implement this hook; a plugin replaces a teacher's loss by marking
    its implementation ``tryfirst=True``.
    """


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------


@hookspec
def teacherkit_augmentations() -> list[CharacteristicSpec]:
    """Contribute augmentation characteristics (object traits and environment facts).

    Called when an augmentation pipeline is assembled and by ``teacherkit augment
    list``.

    :return: a list of :class:`teacherkit.teachers.CharacteristicSpec`; each names a
        characteristic (``"reflective_surface"``) or an environment fact with its
        allowed values (``"lighting"`` with ``fixed``/``variable``), says in one line
        why it helps, and builds the transforms for a value and an intensity.

    All plugins' lists are concatenated; a duplicate name is an error.
    """


@hookspec(firstresult=True)
def teacherkit_make_augmentation(
    config: AugmentationConfig, dataset_info: DatasetInfo, host: PluginHost
) -> Augmentation | None:
    """Assemble the training-time augmentation pipeline.

    Called once per training run, before the datasets are built.

    :param config: the resolved ``augmentation`` config section (characteristics,
        environment, intensity, seed).
    :param dataset_info: facts about the training data.
    :param host: the :class:`teacherkit.plugins.PluginHost` making the call, so the
        pipeline sees characteristics of every plugin registered on it (including ones
        registered in-process, as in tests).
    :return: a callable ``augment(sample, seed) -> sample`` that keeps boxes, masks and
        labels consistent and is deterministic for a seed, or ``None`` to train without augmentation.

    Stops at the first non-``None`` result. With no plugin answering, training runs
    without augmentation.
    """


@hookspec
def teacherkit_sample_fields() -> dict[str, str]:
    """Say how augmentation treats the sample fields that carry your annotation kind.

    Called when the training-time augmentation is assembled, so fields a plugin adds to
    a :class:`teacherkit.types.Sample` stay consistent with the augmented image.

    :return: ``{field: role}``. ``field`` is a key of the sample (``"keypoints"``) or of
        its ``extra`` dict (``"extra.landmarks"``). ``role`` is ``"keypoints"`` for an
        ``(N, K, 3)`` array of ``(x, y, visibility)`` in pixels, moved with the image
        (points that leave it get visibility 0), or ``"instances"`` for an array with one
        row per instance, re-indexed to the instances that survive.

    All plugins' dicts are merged; two plugins giving one field different roles is an
    error. The core's ``keypoints`` field is always moved as keypoints.
    """


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


@hookspec
def teacherkit_register_commands(app: typer.Typer) -> None:
    """Add commands or command groups to the ``teacherkit`` command line.

    Called once when the CLI is built, before arguments are parsed.

    :param app: the root :class:`typer.Typer` application; call ``app.command()`` or
        ``app.add_typer()`` on it. Import heavy libraries inside the command
        functions, not at module level, so ``teacherkit --help`` stays fast.

    Every implementation is called; return values are ignored.
    """
