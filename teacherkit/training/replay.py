"""Replay (rehearsal) as the trainer sees it: one typed object for the source-domain file,
loaded once, mixed into each teacher's training set that can use it, recorded in
``metadata.json``. The mixing itself is :class:`teacherkit.training.dataset.ReplayMix`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.errors import DataError


def replay_paths(replay_cfg: Any) -> tuple[Path, Path] | None:
    """``(replay JSON, its image folder)`` of ``training.replay``, checked to exist;
    ``None`` when replay is off."""
    if not replay_cfg.data:
        return None
    path = Path(replay_cfg.data)
    if not path.is_file():
        raise DataError(f"training.replay.data {path}: file not found")
    images = Path(replay_cfg.images) if replay_cfg.images else path.parent
    if not images.is_dir():
        raise DataError(f"training.replay.images {images}: folder not found")
    return path, images


@dataclass(frozen=True)
class ReplaySource:
    """The replay file, remapped to the training file's categories.

    :param path: the replay COCO JSON.
    :param images: folder its ``file_name`` values are relative to.
    :param coco: the loaded, remapped dataset.
    :param kinds: annotation kinds it holds (a teacher is fed only when its kind is here).
    :param fraction: replay images per epoch as a fraction of the training images.
    """

    path: Path
    images: Path
    coco: Any
    kinds: tuple[str, ...]
    fraction: float

    @classmethod
    def load(cls, replay_cfg: Any, train_coco: Any, train_path: Path, host: Any) -> ReplaySource | None:
        """The source of ``training.replay``, or ``None`` when replay is off."""
        from teacherkit.data.coco import load_coco
        from teacherkit.data.inspect import inspect_dataset
        from teacherkit.training.dataset import remap_replay

        paths = replay_paths(replay_cfg)
        if paths is None:
            return None
        path, images = paths
        coco = remap_replay(load_coco(path), path, list(train_coco.categories), train_path)
        kinds = tuple(inspect_dataset(coco, host=host).annotation_kinds)
        return cls(path, images, coco, kinds, float(replay_cfg.fraction))

    def describe(self, num_train: int) -> str:
        from teacherkit.training.dataset import replay_count

        return (f"replay: {replay_count(num_train, self.fraction)} images per epoch (fraction {self.fraction:g}) "
                f"drawn from {len(self.coco.images)} in {self.path}; kinds: {', '.join(self.kinds) or 'none'}")

    def mix(self, spec: Any, train_set: Any, dataset_kwargs: dict[str, Any], reporter: Any) -> Any:
        """``train_set`` mixed with replay images when the file has what ``spec`` learns
        from; ``train_set`` itself (and a warning) otherwise. ``dataset_kwargs`` are those
        ``train_set`` was built with (info, preprocessor, augmentation, seed, ...)."""
        from teacherkit.training.dataset import REPLAY_STREAM, CocoTrainDataset, ReplayMix, replay_count, sample_seed

        if spec.learns_from not in self.kinds:
            reporter.warn(f"replay: {self.path} has no '{spec.learns_from}' annotations; "
                          f"{spec.name} trains without replay")
            return train_set
        seed = dataset_kwargs["seed"]
        records = dataset_kwargs.get("view_records")
        replay_set = CocoTrainDataset(self.coco, self.images, **{
            **dataset_kwargs, "seed": sample_seed(seed, REPLAY_STREAM, 0),
            "view_records": records.part("replay") if records is not None else None})
        return ReplayMix(train_set, replay_set, per_epoch=replay_count(len(train_set), self.fraction), seed=seed)

    def metadata(self) -> dict[str, Any]:
        from teacherkit.training.metadata import file_fingerprint

        return {"path": str(self.path), "fingerprint": file_fingerprint(self.path), "images": str(self.images),
                "num_images": len(self.coco.images), "fraction": self.fraction}
