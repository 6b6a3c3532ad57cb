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
import importlib
import logging
import os
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from teacherkit import hookspecs
from teacherkit.errors import TeacherkitError

if TYPE_CHECKING:  # pragma: no cover
    import typer
    from stevedore.extension import Extension

    from teacherkit.config import AugmentationConfig, RootConfig, TeacherConfig
    from teacherkit.data.info import DatasetInfo
    from teacherkit.teachers import Augmentation, CharacteristicSpec, LossFn, Preprocessor, Teacher, TeacherSpec

log = logging.getLogger("teacherkit.plugins")

ENTRY_POINT_GROUP = "teacherkit.plugins"
DISABLE_ENV = "TEACHERKIT_DISABLE_PLUGINS"

#: Core plugins, loaded by module name through the same registration path as
#: third-party ones.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (("builtin-detectors", "teacherkit.builtin.detectors"),)


class PluginError(TeacherkitError, RuntimeError):
    """A plugin misbehaved or a requested plugin/teacher is missing."""


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    builtin: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "builtin": self.builtin,
        }


@dataclass
class PluginFailure:
    name: str
    error: str
    traceback: str = ""
    entry_point: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "entry_point": self.entry_point, "error": self.error}


def disabled_plugins(env: dict[str, str] | None = None) -> set[str]:
    raw = (env if env is not None else os.environ).get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _plugin_object(obj: Any) -> Any:
    """Entry points may name a module, a class (instantiated) or an instance."""
    if isinstance(obj, type):
        return obj()
    return obj


def _module_name(obj: Any) -> str:
    if isinstance(obj, ModuleType):
        return obj.__name__
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


@dataclass
class PluginHost:
    """Typed facade over the pluggy manager: one method per hook."""

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
        hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
        self.infos.append(PluginInfo(name, _module_name(obj), distribution, version, hooks, builtin))

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.infos = [i for i in self.infos if i.name != name]

    def plugin_names(self) -> list[str]:
        return [i.name for i in self.infos]

    # -- inspection ----------------------------------------------------------------------
    def detect_annotations(self, dataset: Any) -> list[str]:
        kinds: set[str] = set()
        for result in self.pm.hook.teacherkit_detect_annotations(dataset=dataset):
            kinds.update(result or [])
        return sorted(kinds)

    # -- teachers ------------------------------------------------------------------------
    def teachers(self) -> dict[str, TeacherSpec]:
        specs: dict[str, TeacherSpec] = {}
        # pluggy calls the newest plugin first; list teachers in registration order instead
        # (so boxes before masks for the built-in pair, and results are stable)
        for impl, result in zip(
            self.pm.hook.teacherkit_register_teachers.get_hookimpls(),
            reversed(self.pm.hook.teacherkit_register_teachers()),
            strict=False,
        ):
            for spec in result or []:
                if spec.name in specs:
                    raise PluginError(
                        f"teacher {spec.name!r} is declared twice (second by plugin {impl.plugin_name!r})")
                specs[spec.name] = spec
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
        model = self.pm.hook.teacherkit_load_model(teacher=spec, config=config, dataset_info=dataset_info,
                                                   workdir=workdir)
        if model is None:
            raise PluginError(f"no plugin answered teacherkit_load_model for teacher {spec.name!r}")
        return model

    def make_preprocessor(self, spec: TeacherSpec, config: TeacherConfig, model: Teacher) -> Preprocessor:
        pre = self.pm.hook.teacherkit_make_preprocessor(teacher=spec, config=config, model=model)
        if pre is None:
            raise PluginError(f"no plugin answered teacherkit_make_preprocessor for teacher {spec.name!r}")
        return pre

    def make_loss(self, spec: TeacherSpec, config: TeacherConfig, model: Teacher) -> LossFn:
        loss = self.pm.hook.teacherkit_make_loss(teacher=spec, config=config, model=model)
        if loss is None:
            raise PluginError(f"no plugin answered teacherkit_make_loss for teacher {spec.name!r}")
        return loss

    # -- augmentation --------------------------------------------------------------------
    def characteristics(self) -> list[CharacteristicSpec]:
        from dataclasses import replace

        out: list[CharacteristicSpec] = []
        seen: dict[str, str] = {}
        impls = list(reversed(self.pm.hook.teacherkit_augmentations.get_hookimpls()))
        for impl in impls:
            for spec in impl.function() or []:
                if spec.name in seen:
                    raise PluginError(
                        f"augmentation characteristic {spec.name!r} is declared by both "
                        f"{seen[spec.name]!r} and {impl.plugin_name!r}"
                    )
                seen[spec.name] = impl.plugin_name
                out.append(replace(spec, plugin=impl.plugin_name))
        return out

    def make_augmentation(self, config: AugmentationConfig, dataset_info: DatasetInfo) -> Augmentation | None:
        return self.pm.hook.teacherkit_make_augmentation(config=config, dataset_info=dataset_info, host=self)

    # -- CLI -------------------------------------------------------------------------------
    def register_commands(self, app: typer.Typer) -> None:
        """Let every plugin add commands; one whose hook raises is recorded as a failure and
        skipped, so a broken plugin never takes the whole CLI down."""
        for impl in reversed(self.pm.hook.teacherkit_register_commands.get_hookimpls()):
            try:
                impl.function(app=app)
            except Exception as exc:
                _record_failure(self, impl.plugin_name, None, exc, hook="teacherkit_register_commands")

    # -- config ----------------------------------------------------------------------------
    def config_model(self) -> type[RootConfig]:
        from teacherkit.config import build_config_model

        return build_config_model({name: spec.config_model for name, spec in self.teachers().items()})


def _load_default_plugin(host: PluginHost, name: str, module: str) -> None:
    host.register(importlib.import_module(module), name, distribution="teacherkit",
                  version=_version_of("teacherkit"), builtin=True)


def _version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _entry_point_dist(ep: Any) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


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
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm, disabled=set(disabled) if disabled is not None else disabled_plugins())

    if builtins:
        for name, module in DEFAULT_PLUGINS:
            _load_default_plugin(host, name, module)

    if extensions is not None:
        _register_extensions(host, extensions)
    elif entry_points:
        _discover(host)

    for name, obj in extra_plugins:
        host.register(obj, name)
    return host


def _record_failure(host: PluginHost, name: str, ep: Any, exc: BaseException, hook: str | None = None) -> None:
    failure = PluginFailure(
        name=name,
        entry_point=getattr(ep, "value", "") or "",
        error=(f"in {hook}: " if hook else "") + f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
    )
    host.failures.append(failure)
    what = f"failed in {hook}" if hook else "failed to load and was skipped"
    log.warning("plugin %r %s: %s: %s", name, what, type(exc).__name__, exc)
    log.debug("%s", failure.traceback)


def _discover(host: PluginHost) -> None:
    from importlib.metadata import entry_points

    from stevedore import NamedExtensionManager

    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in host.disabled]
    if not eps:
        return
    names = [ep.name for ep in eps]
    dists = {ep.name: _entry_point_dist(ep) for ep in eps}

    def on_failure(_manager: Any, ep: Any, exc: BaseException) -> None:
        _record_failure(host, ep.name, ep, exc)

    manager = NamedExtensionManager(
        ENTRY_POINT_GROUP,
        names=sorted(set(names)),
        on_load_failure_callback=on_failure,
        on_missing_entrypoints_callback=lambda _missing: None,
    )
    _register_extensions(host, sorted(manager, key=lambda ext: ext.name), dists)


def _register_extensions(host: PluginHost, extensions: Iterable[Extension],
                         dists: dict[str, tuple[str | None, str | None]] | None = None) -> None:
    for ext in extensions:
        if ext.name in host.disabled:
            continue
        ep = getattr(ext, "entry_point", None)
        dist, version = (dists or {}).get(ext.name) or (_entry_point_dist(ep) if ep is not None else (None, None))
        try:
            host.register(ext.plugin, ext.name, distribution=dist, version=version)
        except Exception as exc:  # a broken plugin must not take the CLI down
            _record_failure(host, ext.name, ep, exc)
