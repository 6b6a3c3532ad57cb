"""The frozen-encoder embedding cache: equivalence, one encoder run per image, disk reuse."""

from __future__ import annotations

import pytest
import torch

from teacherkit_sam import load_sam_with_lora
from teacherkit_sam.cache import EmbeddingCache
from teacherkit_sam.loss import SamLoss

TINY = {"image_size": 64, "mode": "frozen_encoder"}


def _count_encoder_calls(teacher) -> list[int]:
    calls = [0]
    teacher.sam.vision_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _loss_and_grads(teacher, batch):
    teacher.model.zero_grad()
    loss = SamLoss()(teacher.forward(teacher.model, batch), batch)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in teacher.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("store", ["memory", "device"])
def test_cached_and_uncached_training_give_the_same_loss_on_the_same_batch(shapes_samples, store):
    cached = load_sam_with_lora("tiny", cache_embeddings=store, **TINY)
    uncached = load_sam_with_lora("tiny", cache_embeddings="off", **TINY)
    assert cached.uses_cache and not uncached.uses_cache
    pre = cached.make_preprocessor()
    batch = pre.collate([pre({**s, "extra": {"seed": 1}}, train=True) for s in shapes_samples])
    reference, reference_grads = _loss_and_grads(uncached, batch)
    first, _ = _loss_and_grads(cached, batch)  # fills the cache
    second, grads = _loss_and_grads(cached, batch)  # served from it
    assert cached.cache.stats() == {"hits": 4, "misses": 4, "entries": 4}
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    torch.testing.assert_close(second, reference, rtol=0, atol=0)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-6, atol=1e-8)


def test_the_encoder_runs_once_per_image_across_epochs(shapes_samples):
    teacher = load_sam_with_lora("tiny", **TINY)
    calls = _count_encoder_calls(teacher)
    pre = teacher.make_preprocessor()
    for epoch in range(3):
        teacher.on_epoch_start(epoch)
        for start in (0, 2):  # two batches of two images
            items = [pre({**s, "extra": {"seed": epoch}}, train=True) for s in shapes_samples[start : start + 2]]
            batch = pre.collate(items)
            SamLoss()(teacher.forward(teacher.model, batch), batch)["loss"].backward()
    assert calls[0] == 2  # one batched encoder call per first-epoch batch, none later
    assert teacher.cache.stats()["hits"] == 4  # counted since the last on_epoch_start (epoch 2)


def test_disk_cache_is_reused_by_a_new_teacher_of_the_same_base(shapes_samples, tmp_path):
    first = load_sam_with_lora("tiny", cache_embeddings="disk", workdir=tmp_path, **TINY)
    pre = first.make_preprocessor()
    batch = pre.collate([pre(s, train=False) for s in shapes_samples])
    expected = first.predict(first.model, batch)
    files = list((tmp_path / "cache" / "sam-embeddings").glob("*/*/*.safetensors"))
    assert len(files) == 4

    second = load_sam_with_lora("tiny", cache_embeddings="disk", workdir=tmp_path, **TINY)
    calls = _count_encoder_calls(second)
    assert second.predict(second.model, batch) == expected and calls[0] == 0

    other_base = load_sam_with_lora("tiny", cache_embeddings="disk", workdir=tmp_path, seed=1, **TINY)
    other_base.predict(other_base.model, batch)
    assert len(list((tmp_path / "cache" / "sam-embeddings").iterdir())) == 2  # its own namespace


def test_memory_cache_evicts_least_recently_used_past_its_budget():
    cache = EmbeddingCache("memory", max_bytes=3 * 16 * 4)  # three 16-float entries
    for key in "abc":
        cache.put(key, torch.zeros(16))
    cache.get("a")  # a is now the most recent
    cache.put("d", torch.zeros(16))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 3


def test_a_batch_of_hits_and_misses_is_put_together_in_batch_order():
    """Half the rows from the cache, half encoded: each row is its own key's embedding, and
    a device entry owns its bytes (not a view that keeps the encoded batch alive)."""
    values = {k: torch.full((2, 3), float(i)) for i, k in enumerate("abcd")}

    def encoder_of(keys):
        return lambda rows: torch.stack([values[keys[int(r)]] for r in rows])

    keys = list("abcd")
    for store in ("memory", "device"):
        cache = EmbeddingCache(store)
        cache.embeddings(["a", "c"], torch.arange(2), encoder_of("ac"))
        out = cache.embeddings(keys, torch.arange(4), encoder_of(keys))
        assert cache.stats() == {"hits": 2, "misses": 4, "entries": 4}
        torch.testing.assert_close(out, torch.stack([values[k] for k in keys]), rtol=0, atol=0)
        entry = cache.get("b")
        assert entry.untyped_storage().nbytes() == entry.numel() * entry.element_size()
        hits = cache.embeddings(["d", "a"], torch.arange(2), lambda rows: 1 / 0)  # every row cached: no encoder
        torch.testing.assert_close(hits, torch.stack([values["d"], values["a"]]), rtol=0, atol=0)


def test_an_unknown_store_is_refused():
    with pytest.raises(ValueError, match="unknown embedding cache store 'gpu'"):
        EmbeddingCache("gpu")


def test_only_a_cached_encoder_has_its_images_hashed_and_a_batch_without_keys_is_encoded(shapes_samples, caplog):
    """Workers hash each image only for a teacher that caches; a batch made while the encoder
    still trained (no keys) is encoded directly by a teacher frozen since, to the same masks,
    and the run says once that the cache was skipped."""
    lora = load_sam_with_lora("tiny", image_size=64)
    frozen = load_sam_with_lora("tiny", **TINY)
    sample = {**shapes_samples[0], "extra": {"seed": 3}}
    assert lora.make_preprocessor()(sample, train=True)["cache_key"] is None
    keyed = frozen.make_preprocessor()(sample, train=True)
    assert isinstance(keyed["cache_key"], str) and len(keyed["cache_key"]) == 40
    pre = frozen.make_preprocessor()
    batch = pre.collate([pre(s, train=False) for s in shapes_samples])
    unkeyed = {**batch, "cache_keys": [None] * len(batch["cache_keys"])}
    calls = _count_encoder_calls(frozen)
    with caplog.at_level("WARNING", logger="teacherkit_sam.teacher"):
        assert frozen.predict(frozen.model, unkeyed) == frozen.predict(frozen.model, batch)
        frozen.predict(frozen.model, unkeyed)
    assert calls[0] == 3 and len(frozen.cache) == len(shapes_samples)  # only the keyed batch filled it
    assert [r.message for r in caplog.records].count(
        "sam: a batch without embedding-cache keys (its preprocessor was made while the image encoder trained); "
        "encoding it without the cache") == 1


def test_lora_mode_never_caches_a_trainable_encoder(shapes_samples):
    teacher = load_sam_with_lora("tiny", image_size=64, mode="lora", cache_embeddings="memory")
    calls = _count_encoder_calls(teacher)
    pre = teacher.make_preprocessor()
    batch = pre.collate([pre(s, train=True) for s in shapes_samples[:2]])
    for _ in range(2):
        teacher.forward(teacher.model, batch)
    assert calls[0] == 2 and teacher._cache is None


def test_a_cached_frozen_encoder_asks_for_a_few_augmented_views():
    assert load_sam_with_lora("tiny", **TINY).augmentation_views() == 2  # the default cache_views
    assert load_sam_with_lora("tiny", cache_views=3, **TINY).augmentation_views() == 3
    # a fresh view every epoch when asked, when nothing is cached, or when the encoder trains
    assert load_sam_with_lora("tiny", cache_views=0, **TINY).augmentation_views() is None
    assert load_sam_with_lora("tiny", cache_embeddings="off", **TINY).augmentation_views() is None
    assert load_sam_with_lora("tiny", image_size=64).augmentation_views() is None


def test_with_the_default_augmentation_a_repeated_view_is_served_from_the_cache(shapes_samples, plugin_host):
    """Epochs e and e + K augment with the same seed (cache_views = K): the encoder input
    repeats exactly, so the second epoch is all hits with the same embeddings; another
    view's seed gives another input (a miss)."""
    from teacherkit.config import AugmentationConfig
    from teacherkit.data.info import DatasetInfo
    from teacherkit.data.samples import sample_seed

    augment = plugin_host.make_augmentation(AugmentationConfig(), DatasetInfo(annotation_kinds=["masks"]))
    assert augment is not None
    teacher = load_sam_with_lora("tiny", **TINY)
    pre = teacher.make_preprocessor()
    views = teacher.augmentation_views()

    def epoch_batch(epoch):
        items = []
        for index, sample in enumerate(shapes_samples):
            seed = sample_seed(0, epoch, index)  # prompts: the epoch's own seed
            view = augment({**sample, "extra": {"seed": seed}}, sample_seed(0, epoch % views, index))
            items.append(pre(view, train=True))
        return pre.collate(items)

    first_batch = epoch_batch(0)
    first = teacher.cache.embeddings(first_batch["cache_keys"], teacher.encoder_input(first_batch), teacher._encode)
    assert teacher.cache.stats()["misses"] == len(shapes_samples)
    teacher.cache.reset_stats()
    again = epoch_batch(views)  # the same view, other prompts
    assert not torch.equal(again["input_boxes"], epoch_batch(0)["input_boxes"])
    served = teacher.cache.embeddings(again["cache_keys"], teacher.encoder_input(again), teacher._encode)
    assert teacher.cache.stats()["hits"] == len(shapes_samples)
    torch.testing.assert_close(served, first, rtol=0, atol=0)
    other = epoch_batch(1)
    teacher.cache.embeddings(other["cache_keys"], teacher.encoder_input(other), teacher._encode)
    assert teacher.cache.stats()["misses"] == len(shapes_samples)  # view 1: new inputs


def test_a_frozen_encoder_runs_encoder_batch_size_images_per_call(shapes_samples):
    """The training batch is encoded in chunks: 4 images at encoder_batch_size 3 take two
    encoder calls (3 + 1), with and without the cache, and the loss equals one call's."""
    pre = load_sam_with_lora("tiny", **TINY).make_preprocessor()
    batch = pre.collate([pre({**s, "extra": {"seed": 2}}, train=True) for s in shapes_samples])
    losses = {}
    for store in ("off", "memory"):
        for chunk in (3, 8):
            teacher = load_sam_with_lora("tiny", cache_embeddings=store, encoder_batch_size=chunk, **TINY)
            calls = _count_encoder_calls(teacher)
            losses[store, chunk], _ = _loss_and_grads(teacher, batch)
            assert calls[0] == (2 if chunk == 3 else 1), (store, chunk)
    reference = losses["off", 8]
    for loss in losses.values():
        torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)


def test_a_frozen_encoder_predicts_as_transformers_samodel_from_pixels(shapes_samples):
    """Embeddings made outside the model (chunked, no autograd) give transformers' own
    result for pixels passed to ``SamModel``, cached or not."""
    for store in ("off", "memory"):
        teacher = load_sam_with_lora("tiny", cache_embeddings=store, encoder_batch_size=2, **TINY)
        pre = teacher.make_preprocessor()
        batch = pre.collate([pre(s, train=False) for s in shapes_samples])
        with torch.no_grad():
            ours = teacher.forward(teacher.model, {**batch, "prompt_kind": "box"})
            theirs = teacher.sam(pixel_values=teacher.encoder_input(batch), input_boxes=batch["input_boxes"],
                                 multimask_output=False)
        torch.testing.assert_close(ours["pred_masks"], theirs.pred_masks, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours["iou_scores"], theirs.iou_scores, rtol=1e-5, atol=1e-5)
