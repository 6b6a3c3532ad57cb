"""Recorded views without pixels (``teachers.sam.view_records``): what the preprocessor makes of a
recorded view, batches with some rows without pixels, and the cache's marks of what it holds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from teacherkit.data.view_records import decode_record, encode_record, pixel_free
from teacherkit_sam import load_sam_with_lora
from teacherkit_sam.cache import EmbeddingCache, HeldKeys
from teacherkit_sam.loss import SamLoss

TINY = {"image_size": 64, "mode": "frozen_encoder"}


def _recorded(pre, sample):
    """``sample`` as a later epoch reads it back: through its record, without its pixels."""
    return decode_record(encode_record(sample, pre.view_key(sample)))


def test_a_recorded_view_gives_the_same_targets_and_prompts_without_pixels(shapes_samples, tmp_path):
    teacher = load_sam_with_lora("tiny", workdir=tmp_path, **TINY)
    pre = teacher.make_preprocessor()
    assert pixel_free(pre) and pre.held is not None
    for sample in shapes_samples:
        sample = {**sample, "extra": {"seed": 11}}
        want = pre(sample, train=True)
        got = pre(_recorded(pre, sample), train=True)
        assert got["pixel_values"] is None and want["pixel_values"].shape == (3, 64, 64)
        assert got["cache_key"] == want["cache_key"] == pre.cache_key(sample["image"])
        for key in ("boxes", "points", "point_labels", "targets"):
            assert np.array_equal(got[key], want[key]), key
        for key in ("annotation_ids", "category_ids", "orig_size", "resized_size", "seed"):
            assert got[key] == want[key], key


def test_a_batch_with_rows_without_pixels_trains_as_with_them(shapes_samples, tmp_path):
    teacher = load_sam_with_lora("tiny", workdir=tmp_path, **TINY)
    pre = teacher.make_preprocessor()
    samples = [{**s, "extra": {"seed": 3}} for s in shapes_samples]
    full = pre.collate([pre(s, train=True) for s in samples])
    assert full["pixel_rows"] is None
    teacher.forward(teacher.model, full)  # the first epoch: encodes and caches all four
    assert all(pre.holds_view(k) for k in full["cache_keys"])
    # rows 0 and 2 come from their records; 1 and 3 with pixels
    mixed = pre.collate([pre(_recorded(pre, s) if i % 2 == 0 else s, train=True) for i, s in enumerate(samples)])
    assert mixed["pixel_rows"] == [1, 3] and mixed["pixel_values"].shape[0] == 2
    none = pre.collate([pre(_recorded(pre, s), train=True) for s in samples])
    assert none["pixel_rows"] == [] and none["pixel_values"].shape == (0, 3, 64, 64)
    losses = []
    for batch in (full, mixed, none):
        out = teacher.forward(teacher.model, batch)
        losses.append(SamLoss()(out, batch)["loss"].detach())
    assert losses[0] == losses[1] == losses[2]
    assert teacher._without_pixels == 2 + 4
    teacher.on_epoch_start(1)
    assert teacher._without_pixels == 0


def test_a_row_without_pixels_the_cache_lacks_is_an_error_not_a_wrong_embedding(shapes_samples, tmp_path):
    teacher = load_sam_with_lora("tiny", workdir=tmp_path, **TINY)
    pre = teacher.make_preprocessor()
    samples = [{**s, "extra": {"seed": 3}} for s in shapes_samples[:2]]
    batch = pre.collate([pre(_recorded(pre, samples[0]), train=True), pre(samples[1], train=True)])
    with pytest.raises(RuntimeError, match="without pixels but its embedding is not in the cache"):
        teacher.forward(teacher.model, batch)


def test_held_entries_are_marked_never_evicted_and_a_new_cache_starts_unmarked(tmp_path):
    held = HeldKeys(str(tmp_path / "held"))
    assert pickle.loads(pickle.dumps(held)) == held  # travels to DataLoader workers
    entry = torch.zeros(256)  # 1 kB
    cache = EmbeddingCache("memory", max_bytes=2048, held=held)
    cache.put("aa1", entry)
    cache.put("bb2", entry)
    cache.put("cc3", entry)  # past the budget: not kept, not marked; the marked two stay
    assert [held(k) for k in ("aa1", "bb2", "cc3")] == [True, True, False]
    assert cache.get("aa1") is not None and cache.get("bb2") is not None and cache.get("cc3") is None
    unmarked = EmbeddingCache("memory", max_bytes=2048)
    for key in ("aa1", "bb2", "cc3"):
        unmarked.put(key, entry)
    assert unmarked.get("aa1") is None and unmarked.get("cc3") is not None  # without marks: least recent goes
    EmbeddingCache("device", max_bytes=2048, held=held)
    assert not held("aa1") and not held("bb2")


def test_what_the_workers_ask_follows_the_store_and_the_settings(tmp_path):
    disk = load_sam_with_lora("tiny", workdir=tmp_path, cache_embeddings="disk", **TINY)
    held = disk.make_preprocessor().held
    assert held.suffix == ".safetensors" and held.directory == str(disk.cache.directory)
    memory = load_sam_with_lora("tiny", workdir=tmp_path / "m", **TINY)
    assert memory.make_preprocessor().held.directory == str(tmp_path / "m" / "cache" / "views" / "rank0" / "sam-held")
    for teacher in (load_sam_with_lora("tiny", workdir=tmp_path, view_records=False, **TINY),
                    load_sam_with_lora("tiny", workdir=tmp_path, cache_views=0, **TINY),
                    load_sam_with_lora("tiny", **TINY),  # no work folder for the marks
                    load_sam_with_lora("tiny", workdir=tmp_path, image_size=64)):  # LoRA: the encoder trains
        pre = teacher.make_preprocessor()
        assert pre.held is None and pre.view_key({"image": np.zeros((4, 4, 3), np.uint8)}) is None
        assert not pre.holds_view("anything")
