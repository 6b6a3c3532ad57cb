"""The SAM teacher's frozen-encoder side: its embedding cache, the marks that tell DataLoader
workers which embeddings it holds, and batches whose recorded views came without pixels.

A mixin of :class:`teacherkit_sam.teacher.SamTeacher`, kept apart because none of it runs
while the encoder trains. It reads the teacher's ``config``, ``settings``, ``workdir``,
``sam``, ``augmentation_views`` and ``frozen_embeddings``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from teacherkit_sam.preprocess import SamPreprocessor

log = logging.getLogger("teacherkit_sam.teacher")


class CachedEncoder:
    """Embedding cache and recorded views of a frozen SAM encoder (see the module docstring)."""

    _cache: Any = None
    _disk_folder: Path | None = None
    _warned_unkeyed: bool = False
    #: rows of this epoch's batches that came without pixels (recorded views), for the epoch's log line
    _without_pixels: int = 0

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from teacherkit_sam.cache import EmbeddingCache

            store, directory = self._cache_store()
            self._cache = EmbeddingCache(store, directory, max_bytes=self.config.cache_memory_mb << 20,
                                         held=self._held_keys() if store != "disk" else None)
        return self._cache

    def _cache_store(self) -> tuple[str, Path | None]:
        """The cache's store and, for ``disk``, its folder (named by the encoder's weights)."""
        from teacherkit_sam.cache import encoder_fingerprint

        store = self.config.cache_embeddings
        if store != "disk":
            return store, None
        if self.workdir is None:
            log.warning("no work folder for the disk embedding cache; caching in memory instead")
            return "memory", None
        if self._disk_folder is None:  # one pass over the weights, once: the encoder is frozen
            pre = SamPreprocessor(image_size=self.settings.size, mean=tuple(self.settings.mean),
                                  std=tuple(self.settings.std))
            name = encoder_fingerprint(self.sam.vision_encoder, pre.preprocessing_id)
            self._disk_folder = self.workdir / "cache" / "sam-embeddings" / name
        return "disk", self._disk_folder

    def held_keys(self) -> Any:
        """Where DataLoader workers see which embeddings the cache holds
        (:class:`~teacherkit_sam.cache.HeldKeys`), so a recorded view comes without its pixels
        (``view_records``); ``None`` when views are not recorded: the encoder trains, views do
        not cycle, ``view_records`` is off, or there is no work folder for the marks. A memory
        or device cache is made now, so that marks a former run left are gone before any
        worker asks."""
        held = self._held_keys()
        if held is not None:
            _ = self.cache
        return held

    def _held_keys(self) -> Any:
        if not (self.config.view_records and self.augmentation_views() and self.workdir is not None):
            return None
        from teacherkit_sam.cache import HeldKeys

        store, directory = self._cache_store()
        if store == "disk":
            return HeldKeys(str(directory), ".safetensors")
        from teacherkit.data.view_records import run_view_records

        # each process its own cache, so its own marks: beside its records, removed with them when training ends
        rank = int(os.environ.get("RANK", "0"))
        return HeldKeys(str(run_view_records(self.workdir, rank).part("sam-held").directory))

    def _recorded_embeddings(self, batch: dict[str, Any]) -> Any:
        """Embeddings of a batch some of whose rows came without pixels (recorded views whose
        embeddings the cache held when their worker asked; held entries are never evicted).
        Only rows with pixels can be encoded: ``pixel_rows`` says where theirs are."""
        import torch

        present = batch["pixel_rows"]
        keys = batch["cache_keys"]
        self._without_pixels += len(keys) - len(present)
        pixels = batch["pixel_values"]
        position = torch.full((len(keys),), -1, dtype=torch.long)  # row -> its place in pixel_values
        position[torch.as_tensor(present, dtype=torch.long)] = torch.arange(len(present))
        position = position.to(pixels.device)
        source = {"pixel_values": pixels,
                  "image_sizes": batch["image_sizes"][torch.as_tensor(present, dtype=torch.long,
                                                                       device=batch["image_sizes"].device)]}

        def encode(places: Any) -> Any:
            if bool((places < 0).any()):
                raise RuntimeError("sam: a view came without pixels but its embedding is not in the cache; "
                                   "set teachers.sam.view_records=false and report this")
            return self.frozen_embeddings(source, places)

        return self.cache.embeddings(keys, position, encode)

    def _keyed(self, batch: dict[str, Any]) -> bool:
        """Whether the cache serves this batch: caching is on and the batch has its keys. A batch
        from a preprocessor made while the encoder still trained has none: it is encoded
        directly, and the run says so once (a cache that never hits is otherwise silent)."""
        if not self.uses_cache:
            return False
        keys = batch.get("cache_keys") or ()
        if keys and None not in keys:
            return True
        if not self._warned_unkeyed:
            self._warned_unkeyed = True
            log.warning("sam: a batch without embedding-cache keys (its preprocessor was made while the image "
                        "encoder trained); encoding it without the cache")
        return False
