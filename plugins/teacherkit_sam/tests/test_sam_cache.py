"""The frozen-encoder embedding cache: equivalence, one encoder run per image, disk reuse."""

from __future__ import annotations

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


def test_cached_and_uncached_training_give_the_same_loss_on_the_same_batch(shapes_samples):
    cached = load_sam_with_lora("tiny", cache_embeddings="memory", **TINY)
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


def test_lora_mode_never_caches_a_trainable_encoder(shapes_samples):
    teacher = load_sam_with_lora("tiny", image_size=64, mode="lora", cache_embeddings="memory")
    calls = _count_encoder_calls(teacher)
    pre = teacher.make_preprocessor()
    batch = pre.collate([pre(s, train=True) for s in shapes_samples[:2]])
    for _ in range(2):
        teacher.forward(teacher.model, batch)
    assert calls[0] == 2 and teacher._cache is None
