"""The registry of augmentation characteristics gathered from every plugin.

``get_augmentation_registry(host)`` collects the :class:`CharacteristicSpec` entries all
plugins return from ``teacherkit_augmentations`` (this plugin's built-in set included)
and turns a user's description into a pipeline::

    registry = get_augmentation_registry()
    pipeline = registry.get_pipeline(characteristics=["changes_shape", "reflective_surface"],
                                     environment={"lighting": "variable", "camera": "fixed"},
                                     intensity="medium", seed=0)
    out = pipeline(image=img, masks=masks, bboxes=boxes, labels=labels)

This module imports no albumentations; :mod:`teacherkit_augment.pipeline` does, when a
pipeline is built.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from teacherkit.config import ConfigError
from teacherkit.plugins import PluginError
from teacherkit_augment.characteristics import INTENSITIES

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.plugins import PluginHost
    from teacherkit.teachers import CharacteristicSpec
    from teacherkit_augment.pipeline import AugmentationPipeline, SampleAugmenter

#: What training uses when the config names no characteristic and no environment fact:
#: exposure/gamma/colour-temperature jitter and small shifts. No flips or rotations,
#: because those are only safe when the user says the objects allow them.
DEFAULT_ENVIRONMENT: dict[str, str] = {"lighting": "variable", "camera": "fixed"}

#: Fraction of an instance's box that must stay in view for the instance to be kept.
DEFAULT_MIN_VISIBILITY = 0.1


class AugmentationError(ConfigError):
    """An augmentation request names something unknown or invalid; the message lists
    the valid choices and the closest match."""


def _unknown(kind: str, name: str, valid: Sequence[str], source: str) -> AugmentationError:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return AugmentationError(f"{_colon(source)}unknown {kind} {name!r}{hint} (valid: {', '.join(valid) or 'none'})")


def _where(source: str, kind: str) -> str:
    if not source:
        return ""
    if source == "cli":
        return f"--{kind}"
    return f"{source}.{kind}"


def _colon(where: str) -> str:
    return f"{where}: " if where else ""


def with_defaults(characteristics: Sequence[str], environment: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The request training and ``augment preview`` use: the user's own, or
    :data:`DEFAULT_ENVIRONMENT` when they named nothing at all."""
    if not characteristics and not environment:
        return [], dict(DEFAULT_ENVIRONMENT)
    return list(characteristics), dict(environment)


class AugmentationRegistry:
    """All known characteristics by name, and the pipelines built from them."""

    def __init__(self, specs: Iterable[CharacteristicSpec]):
        self._specs: dict[str, CharacteristicSpec] = {}
        for spec in specs:
            owner = f" (from plugin {spec.plugin!r})" if spec.plugin else ""
            if spec.name in self._specs:
                raise PluginError(f"augmentation characteristic {spec.name!r} is declared twice{owner}")
            if spec.group == "environment" and not spec.values:
                raise PluginError(f"environment fact {spec.name!r}{owner} declares no allowed values")
            if spec.group == "object" and spec.values:
                raise PluginError(f"object characteristic {spec.name!r}{owner} must not declare values")
            if spec.group not in ("object", "environment"):
                raise PluginError(f"characteristic {spec.name!r}{owner}: group must be 'object' or 'environment'")
            self._specs[spec.name] = spec

    # -- lookup ----------------------------------------------------------------------
    @property
    def specs(self) -> list[CharacteristicSpec]:
        return list(self._specs.values())

    def names(self, group: str | None = None) -> list[str]:
        return [s.name for s in self._specs.values() if group is None or s.group == group]

    def get(self, name: str, *, source: str = "") -> CharacteristicSpec:
        if name not in self._specs:
            raise _unknown("characteristic", name, self.names(), source)
        return self._specs[name]

    def select(
        self,
        characteristics: Sequence[str] | str = (),
        environment: Mapping[str, str] | None = None,
        intensity: str = "medium",
        *,
        source: str = "",
    ) -> list[tuple[CharacteristicSpec, str | None]]:
        """Validate a request and return ``(spec, value)`` pairs in request order
        (object traits first, then environment facts). Duplicates are kept once.

        :param source: where the request came from, named in error messages:
            ``"augmentation"`` (the config section: keys ``augmentation.characteristics``
            ...), ``"cli"`` (flags ``--characteristics``, ``--environment``,
            ``--intensity``) or ``""``.
        """
        if isinstance(characteristics, str):
            characteristics = [characteristics]
        if intensity not in INTENSITIES:
            raise _unknown("intensity", str(intensity), INTENSITIES, _where(source, "intensity"))
        chosen: list[tuple[CharacteristicSpec, str | None]] = []
        seen: set[str] = set()
        where = _where(source, "characteristics")
        for name in characteristics:
            spec = self._specs.get(name)
            if spec is not None and spec.group == "environment":
                raise AugmentationError(
                    f"{_colon(where)}{name!r} is an environment fact and takes a value "
                    f"({'|'.join(spec.values)}); give it under environment, e.g. {name}={spec.values[-1]}"
                )
            if spec is None:
                raise _unknown("characteristic", name, self.names("object"), where)
            if name not in seen:
                seen.add(name)
                chosen.append((spec, None))
        where = _where(source, "environment")
        for key, value in (environment or {}).items():
            spec = self._specs.get(key)
            if spec is not None and spec.group == "object":
                raise AugmentationError(
                    f"{_colon(where)}{key!r} is an object characteristic, not an environment fact; "
                    "list it under characteristics"
                )
            if spec is None:
                raise _unknown("environment fact", key, self.names("environment"), where)
            if value not in spec.values:
                key_where = f"{where} {key}" if where.startswith("--") else f"{where}.{key}" if where else key
                raise _unknown("value", str(value), spec.values, key_where)
            chosen.append((spec, value))
        return chosen

    # -- building --------------------------------------------------------------------
    def transforms(
        self,
        characteristics: Sequence[str] | str = (),
        environment: Mapping[str, str] | None = None,
        intensity: str = "medium",
        *,
        source: str = "",
    ) -> list[Any]:
        """The albumentations transforms of a request, geometric ones first, then
        pixel-level ones, then holes (see :func:`teacherkit_augment.pipeline.order_transforms`)."""
        from teacherkit_augment.pipeline import order_transforms

        built: list[Any] = []
        for spec, value in self.select(characteristics, environment, intensity, source=source):
            try:
                built.extend(spec.build(value, intensity))
            except Exception as exc:
                owner = f" of plugin {spec.plugin!r}" if spec.plugin else ""
                raise PluginError(f"building augmentation {spec.name!r}{owner} failed: {exc}") from exc
        return order_transforms(built)

    def get_pipeline(
        self,
        characteristics: Sequence[str] | str = (),
        environment: Mapping[str, str] | None = None,
        intensity: str = "medium",
        seed: int | None = None,
        *,
        min_visibility: float = DEFAULT_MIN_VISIBILITY,
        source: str = "",
    ) -> AugmentationPipeline:
        """A pipeline callable as ``pipeline(image=..., masks=..., bboxes=..., labels=...)``.

        An empty request gives the identity pipeline (which still applies the box/mask
        rule). With ``seed`` the sequence of results is reproducible; a call may also
        pass its own ``seed=``.
        """
        from teacherkit_augment.pipeline import AugmentationPipeline

        transforms = self.transforms(characteristics, environment, intensity, source=source)
        return AugmentationPipeline(transforms, seed=seed, min_visibility=min_visibility)

    def make_augmenter(
        self,
        characteristics: Sequence[str] = (),
        environment: Mapping[str, str] | None = None,
        intensity: str = "medium",
        *,
        source: str = "augmentation",
        fields: Mapping[str, str] | None = None,
    ) -> SampleAugmenter:
        """The training-time ``augment(sample, seed) -> sample`` callable; an empty
        request uses :data:`DEFAULT_ENVIRONMENT`. ``fields`` are the plugins' declared
        sample fields (``PluginHost.sample_fields()``)."""
        from teacherkit_augment.pipeline import SampleAugmenter

        characteristics, environment = with_defaults(characteristics, environment or {})
        pipeline = self.get_pipeline(characteristics, environment, intensity, source=source)
        return SampleAugmenter(pipeline, dict(fields or {}))


def get_augmentation_registry(host: PluginHost | None = None) -> AugmentationRegistry:
    """The registry of every characteristic the plugins of ``host`` contribute
    (default: a fresh :func:`teacherkit.plugins.get_plugin_manager`)."""
    if host is None:
        from teacherkit.plugins import get_plugin_manager

        host = get_plugin_manager()
    return AugmentationRegistry(host.characteristics())
