"""Default answers to ``teacherkit_make_preprocessor`` and ``teacherkit_make_loss``.

A teacher usually knows its own preprocessor and loss, so these ``trylast``
implementations ask the built :class:`~teacherkit.teachers.Teacher` for them
(``model.make_preprocessor()``, ``model.make_loss()``). A teacher plugin then needs only
``teacherkit_register_teachers`` and ``teacherkit_load_model``; a plugin that wants to
replace a teacher's preprocessor or loss still implements the hook (``tryfirst`` to beat
the teacher's own plugin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teacherkit.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.config import TeacherConfig
    from teacherkit.teachers import LossFn, Preprocessor, Teacher, TeacherSpec


def _ask(model: Any, method: str) -> Any:
    """``model.<method>()``, or ``None`` when the teacher does not provide it (absent, or
    the base class's not-implemented placeholder)."""
    make = getattr(model, method, None)
    if make is None:
        return None
    try:
        return make()
    except NotImplementedError:
        return None


@hookimpl(trylast=True)
def teacherkit_make_preprocessor(teacher: TeacherSpec, config: TeacherConfig, model: Teacher) -> Preprocessor | None:
    return _ask(model, "make_preprocessor")


@hookimpl(trylast=True)
def teacherkit_make_loss(teacher: TeacherSpec, config: TeacherConfig, model: Teacher) -> LossFn | None:
    return _ask(model, "make_loss")
