"""Records of augmented views (``teacherkit.data.view_records``) and the sample dataset reading
through them: a recorded view rebuilds the sample the image would give, without its pixels,
only while the preprocessor says the teacher holds them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from teacherkit.data.coco import load_coco
from teacherkit.data.inspect import inspect_dataset
from teacherkit.data.samples import SampleDataset, sample_seed
from teacherkit.data.view_records import ViewRecords, decode_record, encode_record, pixel_free, run_view_records
from teacherkit.testing import make_coco_dataset


class KeyedSamples:
    """A preprocessor that keys each sample's pixels by their hash and returns the sample as it
    is, so the test sees what reached it; ``held`` stands in for the teacher's cache."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def view_key(self, sample):
        return hashlib.sha1(np.ascontiguousarray(sample["image"]).data).hexdigest()

    def holds_view(self, key):
        return key in self.held

    def __call__(self, sample, *, train):
        return sample


def _augment():
    """The real augmentation plugin's registry at full intensity: flips and warps move masks."""
    from teacherkit.plugins import get_plugin_manager

    return get_plugin_manager()


def _dataset(tmp_path, preprocessor, records, views=2):
    from teacherkit.config import resolve_config

    path = make_coco_dataset(tmp_path / "data", num_images=4, size=(48, 64), keypoints=True, seed=7, max_objects=3)
    coco = load_coco(path)
    info = inspect_dataset(coco)
    host = _augment()
    config = resolve_config(host.config_model())
    augment = host.make_augmentation(config.augmentation, info)
    return SampleDataset(coco, path.parent, info, preprocessor, learns_from="masks", train=True, augment=augment,
                         with_masks=True, seed=5, augment_views=views, view_records=records)


def _same(a, b, where="sample"):
    """Equal values of the same types, arrays with the same dtype, through dicts and lists."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), where
    else:
        assert a == b, where


def test_a_record_keeps_every_field_but_the_pixels(tmp_path):
    dataset = _dataset(tmp_path, KeyedSamples(), None)
    sample = dataset.augment(dataset.raw_sample(1), 3)
    assert sample["masks"].shape[0] >= 1 and sample["masks"].any()
    back = decode_record(encode_record(sample, "key-1"))
    assert back["image"] is None and back["image_shape"] == sample["image"].shape and back["view_key"] == "key-1"
    rest = {k: v for k, v in back.items() if k not in ("image", "image_shape", "view_key")}
    _same(rest, {k: v for k, v in sample.items() if k != "image"})
    # RLE, not H x W bytes per mask
    assert len(encode_record(sample, "k")) < sample["masks"].nbytes


def test_records_that_cannot_be_read_are_absent(tmp_path):
    records = ViewRecords(tmp_path / "r")
    assert records.get(0, 0) is None
    records.path(0, 0).parent.mkdir(parents=True)
    records.path(0, 0).write_bytes(b"\x93not a record")
    assert records.get(0, 0) is None
    import msgspec

    records.path(1, 0).write_bytes(msgspec.msgpack.encode({"v": 99, "sample": {}}))
    assert records.get(1, 0) is None
    with pytest.raises(ValueError, match="0/1 masks"):
        encode_record({"image": np.zeros((2, 2, 3), np.uint8), "masks": np.full((1, 2, 2), 255, np.uint8)}, "k")


def test_a_held_view_comes_from_its_record_and_equals_the_image(tmp_path):
    pre = KeyedSamples()
    records = run_view_records(tmp_path / "teacher", 0, pre)
    fresh = _dataset(tmp_path, pre, None)  # the same data and seeds, never recorded
    dataset = _dataset(tmp_path, pre, records)
    dataset.set_epoch(0)
    first = [dataset[i] for i in range(len(dataset))]
    assert all(s["image"] is not None for s in first)
    assert sorted(p.name for p in (records.directory / "0").iterdir()) == [f"{i}.rec" for i in range(4)]
    dataset.set_epoch(1)  # view 1: new pixels, recorded too
    assert all(dataset[i]["image"] is not None for i in range(4))
    assert len(list((records.directory / "1").iterdir())) == 4

    dataset.set_epoch(2)  # view 0 again: the teacher holds nothing yet, so the images are read
    assert all(dataset[i]["image"] is not None for i in range(4))
    pre.held = {pre.view_key(s) for s in first[:3]}  # it holds three of them
    fresh.set_epoch(2)
    for i in range(4):
        got, want = dataset[i], fresh[i]
        assert (got["image"] is None) == (i < 3)
        # this epoch's seed (prompts change every epoch), the recorded view's geometry
        assert got["extra"]["seed"] == want["extra"]["seed"] == sample_seed(5, 2, i) != first[i]["extra"]["seed"]
        # read or recorded, the sample carries its key, so the preprocessor need not hash the pixels again
        assert got.pop("view_key") == pre.view_key(want)
        if i < 3:
            assert got.pop("image_shape") == want["image"].shape
            got["image"] = want["image"]
        _same({k: v for k, v in got.items() if k != "extra"}, {k: v for k, v in want.items() if k != "extra"})


def test_records_only_with_a_preprocessor_that_can_do_without_pixels(tmp_path):
    class PixelsOnly:
        def __call__(self, sample, *, train):
            return sample

    assert not pixel_free(PixelsOnly()) and pixel_free(KeyedSamples())
    assert run_view_records(tmp_path / "t", 0, PixelsOnly()) is None
    stale = run_view_records(tmp_path / "t", 1)
    stale.part("train").path(0, 0).parent.mkdir(parents=True)
    stale.part("train").path(0, 0).write_bytes(b"old")
    records = run_view_records(tmp_path / "t", 1, KeyedSamples())  # a new run starts empty
    assert records.directory == tmp_path / "t" / "cache" / "views" / "rank1" / "train"
    assert not records.path(0, 0).exists()
    # without views, or without augmentation, the dataset never records
    assert _dataset(tmp_path, KeyedSamples(), records, views=None).view_records is None


def test_the_end_of_a_run_removes_its_records_and_the_folders_they_made(tmp_path):
    keyed = KeyedSamples()
    for rank in (0, 1):
        records = run_view_records(tmp_path / "t", rank, keyed)
        records.put(0, 0, {"image": np.zeros((2, 3, 3), np.uint8), "masks": np.ones((1, 2, 3), np.uint8)}, "k")
    cache = tmp_path / "t" / "cache"
    run_view_records(tmp_path / "t", 0).remove()
    assert not (cache / "views" / "rank0").exists() and records.get(0, 0)["view_key"] == "k"  # rank 1's stay
    (cache / "sam-embeddings").mkdir()
    run_view_records(tmp_path / "t", 1).remove()
    assert not (cache / "views").exists() and (cache / "sam-embeddings").is_dir()  # another user of cache/ keeps it
    run_view_records(tmp_path / "t", 1).remove()  # twice: nothing left to remove
