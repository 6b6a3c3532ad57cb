"""pytest fixtures and helpers for teacherkit and for plugin authors.

Installed as a pytest plugin (entry point ``pytest11``), so a plugin's test suite gets:

``tiny_coco``
    a factory ``tiny_coco(**options) -> Path`` writing a small COCO dataset with real
    image files (PNG) to a temporary folder; boxes and/or masks (polygons, compressed
    or uncompressed RLE), optional keypoints. See :func:`make_coco_dataset`.
``plugin_host``
    a fresh :class:`teacherkit.plugins.PluginHost` with the installed plugins.
``register_plugin``
    ``register_plugin(obj, name="test-plugin") -> PluginHost``: registers a plain object
    with ``@hookimpl`` methods on ``plugin_host`` for one test, unregistered afterwards.
``cli_host``
    ``plugin_host`` made the host the command line uses (``teacherkit.cli.run``) for one
    test, so a plugin registered in-process shows in its commands.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teacherkit.data.synthetic import SHAPES, draw_shapes_image, make_coco_dataset

__all__ = ["SHAPES", "cli_host", "draw_shapes_image", "make_coco_dataset", "plugin_host", "register_plugin",
           "tiny_coco", "train_tiny_pair"]


@pytest.fixture
def tiny_coco(tmp_path_factory: pytest.TempPathFactory):
    """Factory fixture: ``tiny_coco(**make_coco_dataset options) -> Path`` of the JSON."""
    counter = iter(range(1_000_000))

    def factory(**options: Any) -> Path:
        root = tmp_path_factory.mktemp(f"coco{next(counter)}")
        return make_coco_dataset(root, **options)

    return factory


@pytest.fixture
def plugin_host():
    """A fresh plugin host with the installed plugins (and the built-in ones)."""
    from teacherkit.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def register_plugin(plugin_host) -> Iterator[Any]:
    """``register_plugin(obj, name="test-plugin")`` registers a plain object with
    ``@hookimpl`` methods on ``plugin_host`` for this test only."""
    names: list[str] = []

    def register(obj: Any, name: str = "test-plugin") -> Any:
        plugin_host.register(obj, name)
        names.append(name)
        return plugin_host

    yield register
    for name in names:
        if plugin_host.pm.has_plugin(name):
            plugin_host.unregister(name)


@pytest.fixture
def cli_host(plugin_host) -> Iterator[Any]:
    """``plugin_host``, used by the command line for this test only."""
    from teacherkit import plugins

    previous = list(plugins._current)
    plugins.set_current_host(plugin_host)
    yield plugin_host
    plugins.set_current_host(previous[0] if previous else None)


def train_tiny_pair(root: Path, *, train_images: int = 6, val_images: int | None = 3, edge: int = 96,
                    max_detections: int = 5, seed: int = 31, sets: tuple[str, ...] = ()) -> Path:
    """Train both teachers (``--preset tiny``: random small models) for one epoch on a
    generated 64-px dataset under ``root`` and return the experiment folder
    (``root/exp``). The box teacher keeps every detection (thresholds 0, at most
    ``max_detections`` per image), so what it predicts can be labelled and scored.
    ``val_images=None`` trains without a validation file; ``sets`` are more ``--set``s."""
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager
    from teacherkit.training.trainer import TeacherTrainer

    root = Path(root)
    train = make_coco_dataset(root / "train", num_images=train_images, size=(64, 64), seed=seed)
    val = make_coco_dataset(root / "test", num_images=val_images, size=(64, 64), seed=seed + 1) if val_images else None
    host = get_plugin_manager()
    config = resolve_config(host.config_model(), preset="tiny", sets=[
        "training.epochs=1", "training.batch_size=3", "training.num_workers=0",
        f"teachers.grounding_dino.shortest_edge={edge}", f"teachers.grounding_dino.longest_edge={edge}",
        "teachers.grounding_dino.box_threshold=0.0", "teachers.grounding_dino.text_threshold=0.0",
        f"teachers.grounding_dino.max_detections={max_detections}", "teachers.sam.image_size=64", *sets])
    TeacherTrainer(train, val, None, root / "exp", config, host=host, quiet=True).train()
    return root / "exp"
