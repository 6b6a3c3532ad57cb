"""The loss: transformers' Grounding DINO loss, finite with padded text and empty images,
and consistent across a batch whose images have different prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dino_helpers import info_from_categories, make_teacher, random_sample, shapes_info
from transformers.loss.loss_grounding_dino import GroundingDinoImageLoss

from teacherkit_dino.loss import GroundingDinoLoss
from teacherkit_dino.preprocess import pad_prompts


def synthetic_outputs(prompts, num_queries=6, max_len=32, seed=0):
    """Model-like outputs: random logits over each prompt's tokens, -inf elsewhere (as the
    model's contrastive head produces), random boxes."""
    g = torch.Generator().manual_seed(seed)
    b = len(prompts)
    logits = torch.full((b, num_queries, max_len), float("-inf"))
    for i, p in enumerate(prompts):
        logits[i, :, : len(p)] = torch.randn(num_queries, len(p), generator=g) * 3
    boxes = torch.rand(b, num_queries, 4, generator=g) * 0.5 + 0.25
    return {"logits": logits.requires_grad_(), "pred_boxes": boxes.requires_grad_()}


def test_batch_loss_equals_sum_of_single_image_losses_with_different_prompts():
    from teacherkit_dino.prompts import PromptBuilder

    names = ["alpha", "beta", "gamma delta", "epsilon", "zeta"]
    words_to_ids = lambda t: [2000 + sum(map(ord, w)) for w in t.split()]  # noqa: E731 - a stand-in tokenizer
    builder = PromptBuilder(names, [1, 2, 3, 4, 5], words_to_ids, max_text_len=32)
    prompts = [builder.build([0, 1]), builder.build([2, 3, 4]), builder.build([4]), builder.build([1, 2, 3])]
    labels = [
        {"class_labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.2, 0.3]])},
        {"class_labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
        {"class_labels": torch.tensor([0, 0]), "boxes": torch.tensor([[0.2, 0.7, 0.1, 0.1], [0.7, 0.2, 0.2, 0.1]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.4, 0.3, 0.3]])},
    ]
    outputs = synthetic_outputs(prompts)
    loss_fn = GroundingDinoLoss(two_stage=False)

    def run(idx, criterion_cls=None):
        ids, mask = pad_prompts([prompts[i] for i in idx])
        fn = loss_fn
        if criterion_cls is not None:
            fn = GroundingDinoLoss(two_stage=False)
            fn.criterion = criterion_cls(matcher=fn.criterion.matcher, focal_alpha=0.25, losses=["labels", "boxes"])
        out = {k: v[idx] for k, v in outputs.items()}
        return fn(out, {"input_ids": ids, "attention_mask": mask, "labels": [labels[i] for i in idx]})

    batch = run([0, 1, 2, 3])
    n_total = sum(len(lab["class_labels"]) for lab in labels)
    # Each image is matched on its own and every term is a sum normalised by the box count,
    # so the batch loss is the box-weighted mean of the single-image losses.
    for key in ("loss_ce", "loss_bbox", "loss_giou"):
        singles = sum(float(run([i])[key]) * len(labels[i]["class_labels"]) for i in range(4))
        assert float(batch[key]) * n_total == pytest.approx(singles, rel=1e-5), key
    # transformers' own criterion offsets label maps wrongly for mixed prompts (see loss.py).
    hf = run([0, 1, 2, 3], criterion_cls=GroundingDinoImageLoss)
    singles_ce = sum(float(run([i])["loss_ce"]) * len(labels[i]["class_labels"]) for i in range(4))
    assert float(hf["loss_ce"]) * n_total != pytest.approx(singles_ce, rel=1e-3)


def _finite_step(teacher, batch):
    loss_fn = GroundingDinoLoss.from_model_config(teacher.hf_model.config)
    result = loss_fn(teacher.forward(teacher.model, batch), batch)
    assert set(result) >= {"loss", "loss_ce", "loss_bbox", "loss_giou", "loss_ce_enc"}
    assert all(torch.isfinite(v).all() for v in result.values()), result
    result["loss"].backward()
    grads = [p.grad for p in teacher.model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return result


def test_loss_finite_with_padded_text_and_images_without_boxes():
    names = [f"thing {i}" for i in range(40)] + ["a very long class name with many words in it"]
    info = info_from_categories([{"id": i + 1, "name": n} for i, n in enumerate(names)])
    teacher = make_teacher(info, max_text_len=48, finetune="full")
    pre = teacher.make_preprocessor()
    rng = np.random.default_rng(3)
    items = [pre(random_sample(rng, i, labels), train=True) for i, labels in enumerate([[40], [1, 2], [], [7]])]
    batch = pre.collate(items)
    assert not batch["attention_mask"].all()  # there is text padding
    _finite_step(teacher, batch)


def test_loss_finite_when_no_image_has_boxes():
    teacher = make_teacher(shapes_info(), finetune="lora")
    pre = teacher.make_preprocessor()
    rng = np.random.default_rng(4)
    batch = pre.collate([pre(random_sample(rng, i, []), train=True) for i in range(2)])
    result = _finite_step(teacher, batch)
    assert float(result["loss_bbox"]) == 0.0 and float(result["loss_ce"]) > 0.0


def test_one_transfer_matching_equals_matching_each_set_and_host_ids_change_nothing():
    """The decoder's and the encoder proposals' matchings copied to the host together give
    the indices each set gets on its own; the batch's host copy of the prompt ids gives the
    same loss as reading the ids back from the device."""
    from teacherkit_dino.prompts import PromptBuilder

    builder = PromptBuilder(["alpha", "beta", "gamma"], [1, 2, 3],
                            lambda t: [2000 + sum(map(ord, w)) for w in t.split()], max_text_len=32)
    prompts = [builder.build([0, 1, 2]), builder.build([0, 1, 2])]
    labels = [{"class_labels": torch.tensor([1, 0]),
               "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.2, 0.3]])},
              {"class_labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    dec = synthetic_outputs(prompts, num_queries=6, seed=1)
    enc = synthetic_outputs(prompts, num_queries=6, seed=2)
    ids, mask = pad_prompts(prompts)
    loss_fn = GroundingDinoLoss(two_stage=True)
    matcher = loss_fn.criterion.matcher
    from teacherkit_dino.loss import label_maps_on_host

    maps = label_maps_on_host(dec["logits"], ids)
    sets = [{"logits": o["logits"], "pred_boxes": o["pred_boxes"], "label_maps": maps} for o in (dec, enc)]
    together = matcher.match_many(sets, labels)
    for one_set, matched in zip(sets, together):
        alone = matcher(one_set, labels)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(alone, matched))
    outputs = {"logits": dec["logits"], "pred_boxes": dec["pred_boxes"],
               "enc_outputs_class": enc["logits"], "enc_outputs_coord_logits": torch.logit(enc["pred_boxes"])}
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    plain = loss_fn(outputs, batch)
    hosted = loss_fn(outputs, {**batch, "input_ids_host": ids.numpy().copy()})
    assert "loss_ce_enc" in plain and set(plain) == set(hosted)
    assert all(torch.allclose(plain[k], hosted[k]) for k in plain)


def test_sync_free_loss_equals_transformers_criterion() -> None:
    """Same loss terms and gradients as the criterion built from transformers' classes,
    on a batch with text padding, mixed prompts and an image without boxes."""
    names = [f"thing {i}" for i in range(12)]
    info = info_from_categories([{"id": i + 1, "name": n} for i, n in enumerate(names)])
    teacher = make_teacher(info, max_text_len=32, finetune="full")
    pre = teacher.make_preprocessor()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    batch = pre.collate([pre(random_sample(rng, i, labels), train=True)
                         for i, labels in enumerate([[1, 5, 5], [], [11, 2], [7]])])
    outputs = teacher.forward(teacher.model, batch)  # one forward: the model's train mode is not deterministic
    watched = {k: outputs[k] for k in ("logits", "pred_boxes", "enc_outputs_class", "enc_outputs_coord_logits")}
    results = {}
    for sync_free in (True, False):
        loss_fn = GroundingDinoLoss.from_model_config(teacher.hf_model.config, sync_free=sync_free)
        out = loss_fn(outputs, batch)
        grads = torch.autograd.grad(out["loss"], list(watched.values()), retain_graph=True, allow_unused=True)
        results[sync_free] = ({k: float(v) for k, v in out.items()}, grads)
    (fast, fast_grads), (ref, ref_grads) = results[True], results[False]
    assert set(fast) == set(ref) >= {"loss", "loss_ce", "loss_bbox", "loss_giou", "loss_ce_enc"}
    assert ref["loss_bbox"] > 0  # boxes were matched, so every term is exercised
    for key in ref:
        assert fast[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
    for name, fast_grad, ref_grad in zip(watched, fast_grads, ref_grads):
        assert (fast_grad is None) == (ref_grad is None), name
        if ref_grad is not None:
            assert torch.isfinite(fast_grad).all(), name
            torch.testing.assert_close(fast_grad, ref_grad, rtol=1e-4, atol=1e-6)
