"""One DataLoader per split for the whole run, with persistent workers.

The workers start once per split (training, validation) and keep their copy of the dataset,
so the epoch travels with each index (``EpochSampler(keyed=True)`` + ``EpochKeyed``). The
samples of every epoch (order, augmentation seeds and pixels, replay picks, SAM's cycled
views) must be those a loader built anew each epoch gave, for 0 and 2 workers and from a
mid-epoch start; the workers must go at the end, on early stop, on a stop request and
when a loader is rebuilt for another batch size.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from safetensors.torch import load_file

from teacherkit.data.coco import load_coco
from teacherkit.data.inspect import inspect_dataset
from teacherkit.data.samples import SampleDataset
from teacherkit.training.dataset import EpochKeyed, EpochSampler, ReplayMix, replay_count
from teacherkit.training.experiment_lock import _pid_alive
from teacherkit.training.loaders import RunLoaders
from teacherkit.training.loop import Interrupted
from teacherkit.training.trainer import TeacherTrainer

TEACHER = "keypoint_centroid"
BATCH = 3


class _Fingerprint:
    """A picklable preprocessor that keeps what identifies a sample (image, seed, a hash
    of the augmented pixels and boxes) and the pid of the process that loaded it."""

    def __call__(self, sample, train):
        digest = hashlib.sha1(sample["image"].tobytes() + sample["boxes"].tobytes()).hexdigest()
        return {"image_id": sample["image_id"], "seed": sample["extra"]["seed"], "pixels": digest,
                "pid": os.getpid()}

    @staticmethod
    def collate(items):
        return items


@pytest.fixture(scope="module")
def replay_mix(tmp_path_factory):
    """A factory of the training set as the trainer builds it with replay on: the real
    default augmentation, ``augment_views=2`` (a cached SAM asks for it) and a ReplayMix."""
    from teacherkit.config import resolve_config
    from teacherkit.data.synthetic import make_coco_dataset
    from teacherkit.plugins import get_plugin_manager

    root = tmp_path_factory.mktemp("mix")
    train_path = make_coco_dataset(root / "train", num_images=5, size=(48, 48), seed=11)
    replay_path = make_coco_dataset(root / "replay", num_images=6, size=(48, 48), seed=12)
    host = get_plugin_manager()
    train_coco, replay_coco = load_coco(train_path), load_coco(replay_path)
    info = inspect_dataset(train_coco)
    augment = host.make_augmentation(resolve_config(host.config_model()).augmentation, info)

    def make():
        kwargs = {"info": info, "preprocessor": _Fingerprint(), "learns_from": "boxes", "train": True,
                  "augment": augment, "augment_views": 2}
        train = SampleDataset(train_coco, train_path.parent, seed=7, **kwargs)
        replay = SampleDataset(replay_coco, replay_path.parent, seed=8, **kwargs)
        return ReplayMix(train, replay, per_epoch=replay_count(len(train), 0.6), seed=7)

    return make


def _rebuilt_each_epoch(dataset, epochs, starts):
    """The samples as a loader built anew each epoch, after ``set_epoch`` in the main
    process, delivers them (two workers forked per epoch)."""
    from torch.utils.data import DataLoader

    sampler = EpochSampler(len(dataset), seed=7, shuffle=True)
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch, start=starts.get(epoch, 0))
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, collate_fn=_Fingerprint.collate,
                            num_workers=2, persistent_workers=False)
        out.append([item for batch in loader for item in batch])
    return out


def _one_loader_for_the_run(dataset, epochs, starts, workers):
    """The same epochs through one keyed loader of :class:`RunLoaders`; ``set_epoch`` is
    never called on the dataset: the keys alone must carry the epoch."""
    sampler = EpochSampler(len(dataset), seed=7, shuffle=True, keyed=True)
    keyed = EpochKeyed(dataset)
    loaders = RunLoaders(num_workers=workers, seed=7, pin_memory=False)
    out = []
    try:
        for epoch in epochs:
            sampler.set_epoch(epoch, start=starts.get(epoch, 0))
            loader = loaders.get("train", keyed, BATCH, lambda: sampler)
            out.append([item for batch in loader for item in batch])
    finally:
        loaders.close()
    return out


def _identity(epochs):
    return [[{k: v for k, v in item.items() if k != "pid"} for item in epoch] for epoch in epochs]


@pytest.mark.parametrize("workers", [0, 2])
def test_one_loader_gives_every_epoch_the_samples_of_a_loader_built_per_epoch(replay_mix, workers):
    epochs, starts = [0, 1, 2, 3], {}
    expected = _rebuilt_each_epoch(replay_mix(), epochs, starts)
    got = _one_loader_for_the_run(replay_mix(), epochs, starts, workers)
    assert _identity(got) == _identity(expected)
    # the comparison has teeth: order, replay picks and seeds change by epoch, views repeat every 2 epochs
    ids = [[item["image_id"] for item in epoch] for epoch in expected]
    assert ids[0] != ids[1] and sorted(ids[0]) != sorted(ids[1])
    views = [{(item["image_id"], item["pixels"]) for item in epoch} for epoch in expected]
    assert views[0] & views[2] and not views[0] & views[1]
    pids = {item["pid"] for epoch in got for item in epoch}
    if workers:  # two workers served all four epochs; the rebuilt loader forked two per epoch
        assert len(pids) == 2 and os.getpid() not in pids
        assert len({item["pid"] for epoch in expected for item in epoch}) == 8
        assert not any(_pid_alive(pid) for pid in pids)  # closed: gone
    else:
        assert pids == {os.getpid()}


def test_a_mid_epoch_start_continues_with_the_samples_the_epoch_had_left(replay_mix):
    """A resumed run starts its first epoch part-way (``start``) in a fresh process."""
    full = _rebuilt_each_epoch(replay_mix(), [1, 2], {})
    resumed = _one_loader_for_the_run(replay_mix(), [1, 2], {1: 4}, workers=2)
    assert _identity(resumed) == _identity([full[0][4:], full[1]])


def test_a_split_is_rebuilt_only_for_another_batch_size_and_the_old_workers_stop(replay_mix):
    dataset = EpochKeyed(replay_mix())
    loaders = RunLoaders(num_workers=2, seed=7, pin_memory=False)

    def sampler():
        return EpochSampler(len(dataset), seed=7, shuffle=True, keyed=True)

    try:
        first = loaders.get("train", dataset, BATCH, sampler)
        old_pids = {item["pid"] for batch in first for item in batch}
        assert loaders.get("train", dataset, BATCH, sampler) is first
        smaller = loaders.get("train", dataset, 1, sampler)  # e.g. a retry after running out of memory
        assert smaller is not first and smaller.batch_size == 1
        assert not any(_pid_alive(pid) for pid in old_pids)
        new_pids = {item["pid"] for batch in smaller for item in batch}
        assert len(new_pids) == 2 and not new_pids & old_pids
        assert loaders.splits == ["train"]
    finally:
        loaders.close()
        loaders.close()  # twice is fine
    assert loaders.splits == [] and not any(_pid_alive(pid) for pid in new_pids)


# -- whole runs ---------------------------------------------------------------------------------

def _config(host, workers, **sets):
    from teacherkit.config import resolve_config

    base = {"training.epochs": 3, "training.batch_size": 4, "training.num_workers": workers, "training.lr": 1e-2,
            f"teachers.{TEACHER}.lora.dropout": 0.0}
    base.update(sets)
    return resolve_config(host.config_model(), sets=[f"{k}={v}" for k, v in base.items()])


@pytest.fixture
def worker_starts(tmp_path, monkeypatch):
    """The pids of every DataLoader worker the run's loaders start, read from a file each
    worker appends to as it starts (forked workers inherit the patched function)."""
    import teacherkit.training.loaders as loaders

    log = tmp_path / "worker-starts.txt"
    real = loaders.ignore_stop_signals

    def record(worker_id):
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()}\n")
        real(worker_id)

    monkeypatch.setattr(loaders, "ignore_stop_signals", record)

    def read():
        return [int(line) for line in log.read_text().split()] if log.exists() else []

    return read


def _weights(out):
    return load_file(str(out / "teachers" / TEACHER / "checkpoints" / "last" / "trainable.safetensors"))


@pytest.fixture
def replay_run(kp_host, kp_data, tiny_coco):
    """``train(out, workers, **kwargs)``: a 3-epoch keypoint run with replay and the default
    augmentation."""
    replay = tiny_coco(num_images=6, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=5)

    def train(out, workers, resume=False, **kwargs):
        config = None if resume else _config(kp_host, workers, **{"training.replay.data": str(replay),
                                                                  "training.replay.fraction": 0.5})
        return TeacherTrainer(kp_data[0], kp_data[1], None, out, config, host=kp_host, quiet=True, resume=resume,
                              **kwargs).train()

    return train


@pytest.mark.slow
def test_workers_start_once_per_split_and_runs_match_across_workers_and_resume(replay_run, worker_starts, tmp_path):
    """3 epochs + the base epoch: 2 training and 2 validation workers in all (a loader per
    pass would start 14), gone when training returns; the weights equal a run without
    workers and a run stopped mid-epoch and resumed (same samples, same order)."""
    with_workers = replay_run(tmp_path / "two", 2)[TEACHER]
    started = worker_starts()
    assert len(started) == 4 == len(set(started)), started
    assert not any(_pid_alive(pid) for pid in started)
    assert with_workers.epochs_run == 3

    replay_run(tmp_path / "none", 0)
    assert len(worker_starts()) == 4  # no workers without num_workers

    broken = tmp_path / "broken"
    with pytest.raises(Interrupted, match="--resume"):
        replay_run(broken, 2, stop_after_steps=7)  # 12 + 6 replay images, batch 4: 5 steps an epoch
    meta = json.loads((broken / "teachers" / TEACHER / "checkpoints" / "last" / "meta.json").read_text())
    assert (meta["epoch"], meta["batch"]) == (1, 2)
    assert not any(_pid_alive(pid) for pid in worker_starts())  # stopped on request: workers shut down too
    replay_run(broken, 2, resume=True)

    a, b, c = _weights(tmp_path / "two"), _weights(tmp_path / "none"), _weights(broken)
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert a[key].equal(b[key]) and a[key].equal(c[key]), key
    assert not any(_pid_alive(pid) for pid in worker_starts())


@pytest.mark.slow
def test_early_stop_shuts_the_workers_down(kp_host, kp_data, worker_starts, tmp_path):
    config = _config(kp_host, 2, **{"training.epochs": 6, "checkpointing.patience": 1,
                                    "checkpointing.min_delta": 1e9})
    result = TeacherTrainer(kp_data[0], kp_data[1], None, tmp_path / "exp", config, host=kp_host,
                            quiet=True).train()[TEACHER]
    assert result.stopped_early and result.epochs_run == 1
    started = worker_starts()
    assert len(started) == 4 and not any(_pid_alive(pid) for pid in started)


@pytest.mark.slow
def test_a_cached_sam_cycles_its_views_with_two_persistent_workers_as_without(tiny_coco, worker_starts, tmp_path,
                                                                               caplog):
    """The tiny SAM teacher with a frozen, cached encoder asks for 2 augmented views per
    image: through persistent workers epoch e must still augment with view e mod 2. The
    cache's per-epoch counts (a fresh view misses, a repeated one hits) and the weights
    equal a run that loads in the main process. From epoch 2 on the workers rebuild each
    view from its record, without its pixels (``teachers.sam.view_records``): the weights
    equal a run that reads and augments every image every epoch."""
    import logging

    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager

    train = tiny_coco(num_images=4, size=(64, 64), boxes=False, seed=31)
    val = tiny_coco(num_images=2, size=(64, 64), boxes=False, seed=32)
    host = get_plugin_manager()
    caplog.set_level(logging.INFO, logger="teacherkit_sam")

    def run(out, workers, *sets):
        caplog.clear()
        config = resolve_config(host.config_model(), preset="tiny", sets=[
            "training.epochs=4", "training.batch_size=2", f"training.num_workers={workers}", "training.lr=1e-3",
            "teachers.sam.image_size=64", "teachers.sam.mode=frozen_encoder", "teachers.sam.cache_views=2", *sets])
        TeacherTrainer(train, val, None, out, config, host=host, quiet=True).train()
        # records and the cache's marks go with the run, and the folders they made
        assert not (out / "teachers" / "sam" / "cache").exists()
        return [r.getMessage() for r in caplog.records if "embedding cache before epoch" in r.getMessage()]

    main_process = run(tmp_path / "none", 0)
    two_workers = run(tmp_path / "two", 2)
    unrecorded = run(tmp_path / "unrecorded", 2, "teachers.sam.view_records=false")
    assert len(main_process) == 4 and two_workers == main_process
    assert "before epoch 2: " in main_process[2] and ", 0 misses" not in main_process[2]  # view 1 is new
    # the third epoch (logged before epoch 3) repeats view 0: the four training images came as records and
    # hit, as did the two validation images; 2 x 4 views + 2 validation images held
    assert main_process[3].endswith(": 6 hits, 0 misses, 10 entries, 4 views without pixels"), main_process[3]
    assert [m.rsplit(", ", 1)[0] for m in unrecorded] == [m.rsplit(", ", 1)[0] for m in main_process]
    assert all(m.endswith(" 0 views without pixels") for m in unrecorded)
    started = worker_starts()
    assert len(started) == 8 and not any(_pid_alive(pid) for pid in started)  # 2 runs x 2 splits x 2
    rel = "teachers/sam/checkpoints/last/trainable.safetensors"
    a, b, c = (load_file(str(tmp_path / name / rel)) for name in ("none", "two", "unrecorded"))
    assert a.keys() == b.keys() == c.keys() and all(a[k].equal(b[k]) and a[k].equal(c[k]) for k in a)
