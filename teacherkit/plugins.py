"""Plugin discovery and the typed facade over the hooks.

Discovery: stevedore over the entry-point group ``teacherkit.plugins``. A plugin that
fails to import is recorded (name, error, traceback) and skipped with one warning line;
the rest of teacherkit keeps working and ``teacherkit plugins`` shows the failure. The
core's own annotation detectors are registered through the same path (pytest's
``default_plugins`` habit). ``TEACHERKIT_DISABLE_PLUGINS=a,b`` blocks plugins by name
before they are imported.

Everything else in teacherkit calls hooks through :class:`PluginHost`, never
``pm.hook`` directly.
"""

from __future__ import annotations

import difflib
import logging
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from teacherkit import hookspecs
from teacherkit.errors import TeacherkitError
from teacherkit.plugin_discovery import DISABLE_ENV, PluginFailure, PluginInfo, disabled_plugins

if TYPE_CHECKING:  # pragma: no cover
    import typer
    from stevedore.extension import Extension

    from teacherkit.config import AugmentationConfig, RootConfig, TeacherConfig
    from teacherkit.convert import BaseLocation
    from teacherkit.data.info import DatasetInfo
    from teacherkit.teachers import Augmentation, CharacteristicSpec, LossFn, Preprocessor, Teacher, TeacherSpec

log = logging.getLogger("teacherkit.plugins")

ENTRY_POINT_GROUP = "teacherkit.plugins"
__all__ = ["DISABLE_ENV", "ENTRY_POINT_GROUP", "PluginError", "PluginFailure", "PluginHookError", "PluginHost",
           "PluginInfo", "current_host", "disabled_plugins", "get_plugin_manager", "set_current_host"]

#: Core plugins, loaded by module name through the same registration path as
#: third-party ones.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("builtin-detectors", "teacherkit.builtin.detectors"),
    ("builtin-teacher-defaults", "teacherkit.builtin.teacher_defaults"),
)


#: How augmentation may treat a plugin's sample field (``teacherkit_sample_fields``).
SAMPLE_FIELD_ROLES = ("keypoints", "instances")


class PluginError(TeacherkitError, RuntimeError):
    """A plugin misbehaved or a requested plugin/teacher is missing."""


def _plugin_object(obj: Any) -> Any:
    """Entry points may name a module, a class (instantiated) or an instance."""
    if isinstance(obj, type):
        return obj()
    return obj


def _module_name(obj: Any) -> str:
    if isinstance(obj, ModuleType):
        return obj.__name__
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


class PluginHookError(PluginError):
    """A plugin's hook raised (or called ``sys.exit()``); names the plugin and the hook and
    chains the cause. A :class:`TeacherkitError` a plugin raises on purpose is a message
    for the user and passes through unchanged."""

    def __init__(self, plugin: str, hook: str, cause: BaseException) -> None:
        self.plugin, self.hook, self.cause = plugin, hook, cause
        super().__init__(f"plugin {plugin!r} failed in {hook}: {_describe(cause)} "
                         f"(to run without it, set {DISABLE_ENV}={plugin})")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class PluginHost:
    """Typed facade over the pluggy manager: one method per hook.

    Every hook goes through :meth:`results_by_plugin` or :meth:`first_result`, which call
    each implementation on its own: results stay paired with the plugin that gave them
    (a plugin answering ``None`` cannot shift the attribution of the others), and an
    error names the plugin and the hook.
    """

    pm: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    disabled: set[str] = field(default_factory=set)

    @property
    def hook(self) -> Any:  # for tests and advanced users; the codebase uses methods below
        return self.pm.hook

    # -- registration ----------------------------------------------------------------
    def register(self, plugin: Any, name: str, *, distribution: str | None = None, version: str | None = None,
                 builtin: bool = False) -> None:
        if name in self.disabled:
            return
        if plugin is None:
            raise PluginError(f"plugin {name!r}: its entry point resolved to None")
        obj = _plugin_object(plugin)
        try:
            self.pm.register(obj, name=name)
        except ValueError as exc:
            raise PluginError(f"plugin {name!r}: {exc}") from exc
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            raise PluginError(f"plugin {name!r} implements a hook teacherkit does not define: {exc}") from exc
        callers = self.pm.get_hookcallers(obj) or []
        wrappers = [c.name for c in callers for i in c.get_hookimpls()
                    if i.plugin_name == name and (i.hookwrapper or i.wrapper)]
        if wrappers:  # results_by_plugin calls implementations one by one; a wrapper has no one to wrap
            self.pm.unregister(name=name)
            raise PluginError(f"plugin {name!r}: hook wrappers are not supported ({', '.join(wrappers)})")
        hooks = sorted(c.name for c in callers)
        self.infos.append(PluginInfo(name, _module_name(obj), distribution, version, hooks, builtin))

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.infos = [i for i in self.infos if i.name != name]

    def plugin_names(self) -> list[str]:
        return [i.name for i in self.infos]

    def record_failure(self, name: str, exc: BaseException, *, entry_point: str = "", hook: str | None = None) -> None:
        """Keep a plugin's failure for ``teacherkit plugins`` and warn in one line (the
        traceback is logged at debug level, shown with ``--verbose``)."""
        failure = PluginFailure(name=name, entry_point=entry_point,
                                error=(f"in {hook}: " if hook else "") + _describe(exc),
                                traceback="".join(traceback.format_exception(exc)))
        self.failures.append(failure)
        what = f"failed in {hook}" if hook else "failed to load and was skipped"
        log.warning("plugin %r %s: %s", name, what, _describe(exc))
        log.debug("%s", failure.traceback)

    # -- calling hooks -----------------------------------------------------------------
    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        """Implementations of ``hook`` in the order pluggy calls them: ``tryfirst`` ones,
        then the most recently registered first, ``trylast`` ones at the end."""
        return list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))

    def _call(self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, Any]) -> Any:
        try:
            return impl.function(*[kwargs[arg] for arg in impl.argnames])
        except TeacherkitError:
            raise
        except (Exception, SystemExit) as exc:  # SystemExit too: a plugin must not end the process
            raise PluginHookError(impl.plugin_name, hook, exc) from exc

    def results_by_plugin(self, hook: str, *, isolate: bool = False, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(plugin name, result)`` for every implementation of ``hook``, in call order.

        :param isolate: instead of raising, give a failing plugin's
            :class:`PluginHookError` as its result (listings that must show the rest).
        """
        out: list[tuple[str, Any]] = []
        for impl in self._impls(hook):
            try:
                out.append((impl.plugin_name, self._call(impl, hook, kwargs)))
            except PluginHookError as exc:
                if not isolate:
                    raise
                out.append((impl.plugin_name, exc))
        return out

    def first_result(self, hook: str, **kwargs: Any) -> tuple[str, Any] | None:
        """``(plugin name, result)`` of the first implementation answering non-``None``
        (what pluggy's ``firstresult`` does), or ``None`` when none answers."""
        for impl in self._impls(hook):
            result = self._call(impl, hook, kwargs)
            if result is not None:
                return impl.plugin_name, result
        return None

    def _required(self, hook: str, spec: TeacherSpec, **kwargs: Any) -> Any:
        answer = self.first_result(hook, teacher=spec, **kwargs)
        if answer is None:
            raise PluginError(f"no plugin answered {hook} for teacher {spec.name!r}")
        return answer[1]

    # -- inspection ----------------------------------------------------------------------
    def detect_annotations(self, dataset: Any) -> list[str]:
        kinds: set[str] = set()
        for plugin, result in self.results_by_plugin("teacherkit_detect_annotations", dataset=dataset):
            kinds.update(_list_of(plugin, "teacherkit_detect_annotations", result, str))
        return sorted(kinds)

    # -- teachers ------------------------------------------------------------------------
    def teachers_by_plugin(self, *, isolate: bool = False) -> list[tuple[str, list[TeacherSpec] | PluginHookError]]:
        """Each plugin's declared teachers, in registration order (so boxes before masks
        for the built-in pair, and listings are stable)."""
        from teacherkit.teachers import TeacherSpec

        out: list[tuple[str, list[TeacherSpec] | PluginHookError]] = []
        for plugin, result in reversed(self.results_by_plugin("teacherkit_register_teachers", isolate=isolate)):
            try:
                if not isinstance(result, PluginHookError):
                    result = _list_of(plugin, "teacherkit_register_teachers", result, TeacherSpec)
            except PluginHookError as exc:
                if not isolate:
                    raise
                result = exc
            out.append((plugin, result))
        return out

    def teachers(self) -> dict[str, TeacherSpec]:
        specs: dict[str, TeacherSpec] = {}
        owner: dict[str, str] = {}
        for plugin, declared in self.teachers_by_plugin():
            for spec in declared:
                if spec.name in specs:
                    raise PluginError(f"teacher {spec.name!r} is declared twice: by plugin {owner[spec.name]!r} "
                                      f"and by plugin {plugin!r}")
                specs[spec.name], owner[spec.name] = spec, plugin
        return specs

    def teacher(self, name: str) -> TeacherSpec:
        specs = self.teachers()
        if name not in specs:
            installed = ", ".join(sorted(specs)) or "none"
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PluginError(
                f"teacher {name!r} is not installed.{hint} Installed teachers: {installed}. "
                f"Install its plugin (e.g. pip install teacherkit-{name.split('_')[-1]}) or check {DISABLE_ENV}."
            )
        return specs[name]

    def teachers_for(self, kinds: Iterable[str]) -> list[TeacherSpec]:
        """Teachers whose annotation kind is present, in declaration order."""
        present = set(kinds)
        return [spec for spec in self.teachers().values() if spec.learns_from in present]

    def load_model(self, spec: TeacherSpec, config: TeacherConfig, dataset_info: DatasetInfo,
                   workdir: Path | None) -> Teacher:
        return self._required("teacherkit_load_model", spec, config=config, dataset_info=dataset_info,
                              workdir=workdir)

    def check_base(self, spec: TeacherSpec, config: TeacherConfig) -> BaseLocation | None:
        """Where ``spec``'s base is (``None`` when its plugin does not say); raises the
        plugin's error naming the model and how to provide it when it is missing."""
        answer = self.first_result("teacherkit_check_base", teacher=spec, config=config)
        return None if answer is None else answer[1]

    def make_preprocessor(self, spec: TeacherSpec, config: TeacherConfig, model: Teacher) -> Preprocessor:
        return self._required("teacherkit_make_preprocessor", spec, config=config, model=model)

    def make_loss(self, spec: TeacherSpec, config: TeacherConfig, model: Teacher) -> LossFn:
        return self._required("teacherkit_make_loss", spec, config=config, model=model)

    # -- augmentation --------------------------------------------------------------------
    def characteristics(self) -> list[CharacteristicSpec]:
        from dataclasses import replace

        from teacherkit.teachers import CharacteristicSpec

        out: list[CharacteristicSpec] = []
        seen: dict[str, str] = {}
        for plugin, result in self.results_by_plugin("teacherkit_augmentations"):
            for spec in _list_of(plugin, "teacherkit_augmentations", result, CharacteristicSpec):
                if spec.name in seen:
                    raise PluginError(f"augmentation characteristic {spec.name!r} is declared by both "
                                      f"{seen[spec.name]!r} and {plugin!r}")
                seen[spec.name] = plugin
                out.append(replace(spec, plugin=plugin))
        return out

    def make_augmentation(self, config: AugmentationConfig, dataset_info: DatasetInfo) -> Augmentation | None:
        answer = self.first_result("teacherkit_make_augmentation", config=config, dataset_info=dataset_info,
                                   host=self)
        return None if answer is None else answer[1]

    def sample_fields(self) -> dict[str, str]:
        """``{sample field: role}`` declared by every plugin (see ``teacherkit_sample_fields``)."""
        fields: dict[str, tuple[str, str]] = {}
        for plugin, result in self.results_by_plugin("teacherkit_sample_fields"):
            if result is not None and not isinstance(result, dict):
                raise PluginHookError(plugin, "teacherkit_sample_fields", TypeError(f"it must return a dict, got "
                                                                                    f"{result!r:.200}"))
            for key, role in (result or {}).items():
                if role not in SAMPLE_FIELD_ROLES:
                    raise PluginError(f"plugin {plugin!r}: sample field {key!r} has role {role!r}; "
                                      f"expected one of {', '.join(SAMPLE_FIELD_ROLES)}")
                if key in fields and fields[key][0] != role:
                    raise PluginError(f"sample field {key!r} is {fields[key][0]!r} for plugin {fields[key][1]!r} "
                                      f"but {role!r} for plugin {plugin!r}")
                fields.setdefault(key, (role, plugin))
        return {key: role for key, (role, _) in fields.items()}

    # -- CLI -------------------------------------------------------------------------------
    def register_commands(self, app: typer.Typer) -> None:
        """Let every plugin add commands; one whose hook raises is recorded as a failure and
        skipped, so a broken plugin never takes the whole CLI down."""
        for plugin, result in reversed(self.results_by_plugin("teacherkit_register_commands", isolate=True,
                                                              app=app)):
            if isinstance(result, PluginHookError):
                self.record_failure(plugin, result.cause, hook="teacherkit_register_commands")

    # -- config ----------------------------------------------------------------------------
    def config_model(self) -> type[RootConfig]:
        from teacherkit.config import build_config_model

        return build_config_model({name: spec.config_model for name, spec in self.teachers().items()})


def _list_of(plugin: str, hook: str, result: Any, kind: type) -> list[Any]:
    """A list hook's answer checked: ``None`` counts as empty; anything but a list or
    tuple of ``kind`` is the plugin's error, reported as such."""
    if result is None:
        return []
    if not isinstance(result, (list, tuple)) or not all(isinstance(item, kind) for item in result):
        problem = TypeError(f"it must return a list of {kind.__name__}, got {result!r:.200}")
        raise PluginHookError(plugin, hook, problem)
    return list(result)


def get_plugin_manager(
    *,
    entry_points: bool = True,
    extensions: Sequence[Extension] | None = None,
    extra_plugins: Iterable[tuple[str, Any]] = (),
    disabled: Iterable[str] | None = None,
    builtins: bool = True,
) -> PluginHost:
    """Build a fresh plugin host.

    :param entry_points: discover installed plugins in ``teacherkit.plugins``.
    :param extensions: stevedore extensions to use instead of the installed entry points
        (tests use ``ExtensionManager.make_test_instance``).
    :param extra_plugins: ``(name, object)`` pairs registered after discovery.
    :param disabled: names to block; defaults to ``TEACHERKIT_DISABLE_PLUGINS``.
    :param builtins: register the core's built-in plugins.
    """
    from teacherkit import plugin_discovery

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm, disabled=set(disabled) if disabled is not None else disabled_plugins())
    if builtins:
        plugin_discovery.register_builtins(host, DEFAULT_PLUGINS)
    if extensions is not None:
        plugin_discovery.register_extensions(host, extensions)
    elif entry_points:
        plugin_discovery.discover(host, ENTRY_POINT_GROUP)
    for name, obj in extra_plugins:
        host.register(obj, name)
    return host


_current: list[PluginHost] = []


def current_host() -> PluginHost:
    """The plugin host of this process (this CLI invocation): built on first use, then
    shared, so plugin commands and the core commands see the same plugins."""
    if not _current:
        _current.append(get_plugin_manager())
    return _current[0]


def set_current_host(host: PluginHost | None) -> None:
    """Make ``host`` the process's host (``None``: build a fresh one on next use)."""
    _current.clear()
    if host is not None:
        _current.append(host)
