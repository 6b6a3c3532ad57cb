"""Review of the persistent training loaders: what a sample holds must depend on the seed,
the epoch and the index only, not on which worker loads it, how long that worker has run,
or whether the run was resumed (docs/architecture.md, "The training loop")."""

from __future__ import annotations

import pytest

from teacherkit.data.coco import load_coco
from teacherkit.data.inspect import inspect_dataset
from teacherkit.data.samples import SampleDataset
from teacherkit.training.dataset import EpochKeyed, EpochSampler
from teacherkit.training.loaders import RunLoaders

BATCH = 2


class _PromptOf:
    """The real Grounding DINO preprocessor, keeping what identifies a sample's prompt (the
    classes in it, in order); picklable, so it runs in the workers."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, sample, train):
        out = self.inner(sample, train=train)
        return (sample["image_id"], out["prompt"].classes)

    @staticmethod
    def collate(items):
        return items


@pytest.fixture(scope="module")
def dino_train_set(tmp_path_factory):
    """A training set read through the real Grounding DINO preprocessor, with a prompt
    too short for every class: each sample's negatives are drawn at random."""
    pytest.importorskip("teacherkit_dino")
    from teacherkit.data.synthetic import make_coco_dataset
    from teacherkit_dino.preprocess import GroundingDinoPreprocessor
    from teacherkit_dino.prompts import PromptBuilder
    from teacherkit_dino.tokenizer import build_tiny_tokenizer, token_ids

    path = make_coco_dataset(tmp_path_factory.mktemp("dino"), num_images=8, size=(32, 32), seed=3)
    coco = load_coco(path)
    info = inspect_dataset(coco)
    tokenizer = build_tiny_tokenizer(info.class_names)
    # 3 classes of one word: 8 tokens; 6 hold two classes, so one of the two others is drawn
    prompts = PromptBuilder(info.class_names, [int(c["id"]) for c in info.categories],
                            lambda text: token_ids(tokenizer, text), max_text_len=6)
    assert not prompts.fits
    pre = _PromptOf(GroundingDinoPreprocessor(prompts, image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
                                              shortest_edge=32, longest_edge=32))

    def make():
        return SampleDataset(coco, path.parent, info, pre, learns_from="boxes", train=True, seed=7)

    return make


def _epochs(dataset, epochs, workers, start=0):
    """The prompts of ``epochs`` through one loader of :class:`RunLoaders`, as the loop
    reads them (keyed sampler, persistent workers); the first epoch from sample ``start``."""
    sampler = EpochSampler(len(dataset), seed=7, shuffle=True, keyed=True)
    keyed = EpochKeyed(dataset)
    loaders = RunLoaders(num_workers=workers, seed=7, pin_memory=False)
    out = {}
    try:
        for epoch in epochs:
            sampler.set_epoch(epoch, start=0 if out else start)
            loader = loaders.get("train", keyed, BATCH, lambda: sampler)
            out[epoch] = [item for batch in loader for item in batch]
    finally:
        loaders.close()
    return out


@pytest.mark.slow
def test_what_workers_draw_follows_the_sample_not_the_worker_or_its_age(dino_train_set):
    """Epoch 2's prompts (Grounding DINO's random negatives): from two workers that served
    epochs 0 and 1; from fresh workers (a run resumed at epoch 2, or part-way through it);
    from one worker. All the same."""
    served = _epochs(dino_train_set(), [0, 1, 2], workers=2)
    persistent = served[2]
    # the comparison has teeth: the prompts are drawn (not all the same), and per epoch
    assert len({classes for _id, classes in persistent}) > 1 and served[1] != persistent
    assert _epochs(dino_train_set(), [2], workers=2)[2] == persistent
    assert _epochs(dino_train_set(), [2], workers=2, start=3)[2] == persistent[3:]
    assert _epochs(dino_train_set(), [2], workers=1)[2] == persistent


@pytest.mark.slow
def test_grounding_dinos_negatives_come_from_the_sample_seed(dino_train_set):
    """docs/architecture.md: GDINO's negative classes come from ``sample_seed(seed, epoch,
    index)``. Without workers too: whatever the process's ``random`` holds (an unseeded
    fresh run, ``--batch-size auto``'s probes before it), the prompts are those the
    workers build."""
    import random

    workers = _epochs(dino_train_set(), [2], workers=2)[2]
    random.seed(1)
    main_a = _epochs(dino_train_set(), [2], workers=0)[2]
    random.seed(2)
    main_b = _epochs(dino_train_set(), [2], workers=0)[2]
    assert main_a == main_b == workers
