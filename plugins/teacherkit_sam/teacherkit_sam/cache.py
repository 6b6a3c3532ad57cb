"""Image-embedding cache for a frozen SAM image encoder.

The image encoder is ~90-98% of SAM's compute and, when frozen, maps the same input
pixels to the same embedding every epoch. The cache runs it once per distinct input
and serves the stored embedding afterwards, so later epochs train the decoder only.

Keys come from the preprocessor (:meth:`SamPreprocessor.cache_key`): a hash of the
image's content and of everything in preprocessing that changes the encoder input.
Augmented views hash differently, so under augmentation the cache hits only because
the teacher asks for a few views per image (``cache_views``,
:meth:`SamTeacher.augmentation_views`): epoch ``e`` repeats the view of epoch
``e mod K``. A namespace
from the encoder's weights keeps a disk cache from serving another model's
embeddings. Entries keep the encoder's dtype. The memory store keeps them on the CPU
and the device store where the encoder ran (an accelerator's memory: a hit then costs
no copy from the host; a 64-image cached step on an H200 ran 3-17% faster than with the
memory store, docs/performance.md); both evict least-recently-used entries past their
byte budget. The disk store writes one
safetensors file per key atomically (several processes may share it).
"""

from __future__ import annotations

import hashlib
import shutil
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_write_bytes

#: where entries live: host memory, the encoder's device, or files
STORES = ("memory", "device", "disk")


@dataclass(frozen=True)
class HeldKeys:
    """Whether the cache holds a key, answered from files, so DataLoader workers (other
    processes) can ask: a view recorded by ``teacherkit.data.view_records`` then comes
    without pixels only when its embedding is here. For the disk store the entries are the
    files; the memory and device stores mark each entry they keep with an empty file
    (:meth:`EmbeddingCache._store`). Picklable: it travels to workers inside the preprocessor."""

    directory: str
    suffix: str = ""

    def path(self, key: str) -> Path:
        return Path(self.directory) / key[:2] / f"{key}{self.suffix}"

    def __call__(self, key: str) -> bool:
        return self.path(key).exists()


class EmbeddingCache:
    """``embeddings(keys, pixel_values, encode)`` returns encoder outputs, computing
    only the missing ones.

    :param held: marks of the entries a memory or device store keeps (:class:`HeldKeys`);
        with it, a kept entry is never evicted (a worker may already have sent its view
        without pixels) and one that does not fit in ``max_bytes`` is not kept. The folder
        is emptied first: a new cache holds nothing.
    """

    def __init__(self, store: str = "memory", directory: Path | None = None, max_bytes: int = 2 << 30,
                 held: HeldKeys | None = None) -> None:
        if store not in STORES:
            raise ValueError(f"unknown embedding cache store {store!r}")
        if store == "disk" and directory is None:
            raise ValueError("a disk embedding cache needs a directory")
        self.store = store
        self.directory = Path(directory) if directory is not None else None
        self.max_bytes = max_bytes
        self.held = held if store != "disk" else None  # the disk store's files are their own marks
        if self.held is not None:
            shutil.rmtree(self.held.directory, ignore_errors=True)
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        if self.store != "disk":
            return len(self._memory)
        return sum(1 for _ in self.directory.glob("*/*.safetensors")) if self.directory.exists() else 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self)}

    def reset_stats(self) -> None:
        self.hits = self.misses = 0

    # -- single entries ------------------------------------------------------------------
    def get(self, key: str) -> Any | None:
        if self.store != "disk":
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
            return value
        path = self._path(key)
        if not path.exists():
            return None
        from safetensors.torch import load

        return load(path.read_bytes())["embedding"]

    def put(self, key: str, embedding: Any) -> None:
        value = embedding.detach()
        # a tensor may be a view into a whole batch: copy so the entry owns only its bytes
        if self.store == "device" or value.device.type == "cpu":
            value = value.contiguous().clone()
        else:
            value = value.to("cpu").contiguous()
        self._store(key, value)

    def _store(self, key: str, value: Any) -> None:
        """Keep ``value`` (a tensor this cache owns: on the CPU unless the store is ``device``) under ``key``."""
        if self.store == "disk":
            from safetensors.torch import save

            atomic_write_bytes(self._path(key), save({"embedding": value}))
            return
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        if key in self._memory:
            old = self._memory.pop(key)
            self._bytes -= old.numel() * old.element_size()
        if self.held is not None:  # marked entries stay: past the budget, new ones are not kept
            if self._bytes + size > self.max_bytes:
                return
            marker = self.held.path(key)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        self._memory[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    # -- a batch -------------------------------------------------------------------------
    def embeddings(self, keys: Sequence[str], pixel_values: Any, encode: Callable[[Any], Any]) -> Any:
        """Embeddings of a batch, ``(B, C, h, w)`` on ``pixel_values``' device.
        ``encode(rows)`` returns the embeddings of the rows the cache lacks (the misses, in batch order)."""
        import torch

        device = pixel_values.device
        found = [self.get(k) for k in keys]
        missing = [i for i, v in enumerate(found) if v is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = None
        if missing:
            with torch.no_grad():
                fresh = encode(pixel_values[missing])
            self._store_batch([keys[i] for i in missing], fresh.detach())
        if fresh is not None and len(missing) == len(keys):
            return fresh
        if fresh is None and all(v.device == device for v in found):  # device entries: one gather kernel
            return torch.stack(found)
        sample = fresh[0] if fresh is not None else found[0]
        out = torch.empty((len(keys), *sample.shape), dtype=sample.dtype, device=device)
        for i, value in enumerate(found):
            if value is None:
                continue
            from_host = device.type == "cuda" and value.device.type == "cpu"
            if from_host and not value.is_pinned():  # entries read from disk
                value = value.pin_memory()
            # from page-locked memory the copy runs asynchronously instead of blocking the host per image
            out[i].copy_(value, non_blocking=device.type == "cuda")
        if fresh is not None:
            out[torch.as_tensor(missing, device=device)] = fresh.to(out.dtype)
        return out

    def _store_batch(self, keys: Sequence[str], fresh: Any) -> None:
        """Store a batch of new embeddings with one wait for the device. From CUDA, the
        memory store keeps each entry in page-locked memory: the copies out run
        asynchronously, later copies in need no staging, and no fresh pageable pages
        are faulted in per entry."""
        import torch

        if fresh.device.type != "cuda" or self.store != "memory":
            rows = fresh if self.store == "device" else fresh.to("cpu")  # the disk store saves from the host
            for row, key in enumerate(keys):
                self.put(key, rows[row])
            return
        rows = []
        for row in range(len(keys)):
            entry = torch.empty(fresh.shape[1:], dtype=fresh.dtype, pin_memory=True)
            entry.copy_(fresh[row], non_blocking=True)
            rows.append(entry)
        torch.cuda.current_stream(fresh.device).synchronize()  # entries are read on the host later
        for key, entry in zip(keys, rows):
            self._store(key, entry)


def encoder_fingerprint(encoder: Any, extra: str = "") -> str:
    """A short id of an encoder's weights: names, shapes, a strided sample of each
    tensor's values and each tensor's sum (one cheap pass, no copy of the weights)."""
    import torch

    h = hashlib.blake2b(digest_size=12)
    h.update(extra.encode())
    with torch.no_grad():
        for name, tensor in encoder.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 256)
            sample = flat[::step][:256].to("cpu", torch.float32)
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(sample.numpy().tobytes())
            h.update(str(float(flat.to(torch.float64).sum())).encode())
    return h.hexdigest()
