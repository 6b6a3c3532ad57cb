"""Finding plugins: the core's built-ins, then the ``teacherkit.plugins`` entry points.

Every plugin goes through :meth:`teacherkit.plugins.PluginHost.register`. A plugin that
fails to import or to register is recorded on the host and skipped; the rest keeps
working. stevedore's :class:`~stevedore.extension.Extension` is the unit handed around
(tests build them with ``ExtensionManager.make_test_instance``), but entry points are
loaded here rather than by stevedore's manager: it lets ``SystemExit`` and
``AssertionError`` escape, and a plugin calling ``sys.exit()`` at import would then end
every command, ``--help`` included.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from stevedore.extension import Extension

    from teacherkit.plugins import PluginHost


DISABLE_ENV = "TEACHERKIT_DISABLE_PLUGINS"


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


def version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def register_builtins(host: PluginHost, plugins: Iterable[tuple[str, str]]) -> None:
    """The core's own plugins, by module name; a failure here is a bug and raises."""
    for name, module in plugins:
        host.register(importlib.import_module(module), name, distribution="teacherkit",
                      version=version_of("teacherkit"), builtin=True)


def _entry_point_dist(ep: Any) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def discover(host: PluginHost, group: str) -> None:
    """Load and register every installed entry point of ``group`` not blocked on ``host``,
    in name order."""
    from importlib.metadata import entry_points

    from stevedore.extension import Extension

    seen: set[str] = set()
    extensions = []
    for ep in sorted(entry_points(group=group), key=lambda ep: ep.name):
        if ep.name in host.disabled or ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # not KeyboardInterrupt: the user asked to stop
            host.record_failure(ep.name, exc, entry_point=ep.value)
            continue
        extensions.append(Extension(ep.name, ep, plugin, None))
    register_extensions(host, extensions)


def register_extensions(host: PluginHost, extensions: Iterable[Extension]) -> None:
    """Register loaded extensions; one that fails (an unknown hook, a class whose
    constructor raises or exits) is recorded and skipped."""
    for ext in extensions:
        if ext.name in host.disabled:
            continue
        ep = getattr(ext, "entry_point", None)
        dist, version = _entry_point_dist(ep) if ep is not None else (None, None)
        try:
            host.register(ext.plugin, ext.name, distribution=dist, version=version)
        except (Exception, SystemExit) as exc:  # a broken plugin must not take the CLI down
            host.record_failure(ext.name, exc, entry_point=getattr(ep, "value", "") or "")
