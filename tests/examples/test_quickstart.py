"""The quick start, as a user types it (from the repository root): LoRA on domain B from
the shipped bases, then evaluate base vs tuned on held-out domain-B images with domain A as
the reference. A short schedule on a few images keeps it a test; examples/quality.py runs
the real one and measures the gain."""

from __future__ import annotations

import json

import pytest

from teacherkit.cli import run
from tests.examples.example_paths import EXAMPLES, QUICKSTART
from tests.examples.test_pretrained import _score, quickstart_config, subset

#: domain-B test images the short run is scored on. This schedule (16 images, 5 epochs) gains
#: nothing measurable: at seed 42 no epoch beat the base on val for either teacher (2026-11-30), so
#: the test checks that the held-out scores follow what training kept; examples/quality.py measures
#: the gain with the full schedule.
HELD_OUT = 16


def _few(split: str, n: int, tmp_path) -> str:
    data = json.loads((EXAMPLES / "domain_b" / f"{split}.json").read_text())
    data["images"] = data["images"][:n]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = tmp_path / f"b_{split}_{n}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.slow
def test_quickstart_commands_train_lora_and_compare_with_the_shipped_base(tmp_path, monkeypatch, capsys, plugin_host):
    monkeypatch.chdir(EXAMPLES.parent)  # the config's base paths are relative to the repository root
    out = tmp_path / "quickstart"
    images = str(EXAMPLES / "domain_b")
    train = _few("train", 16, tmp_path)
    args = ["train", "--config", str(QUICKSTART), "--data", train, "--images", images,
            "--val", _few("val", 8, tmp_path), "--val-images", images, "--output", str(out),
            "--epochs", "5", "--quiet"]
    assert run(args) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "finished"
    for name in ("grounding_dino", "sam"):
        adapter = out / "teachers" / name / "adapter"
        assert (adapter / "adapter_config.json").is_file()  # a LoRA adapter, not a full model
        assert not (out / "teachers" / name / "base").exists()  # the base is the shipped folder, not copied
        assert meta["teachers"][name]["parameters"].startswith("lora")
    capsys.readouterr()
    test_a = subset("domain_a", tmp_path, 8)
    # scored on held-out images (domain B's test split, never trained on nor used to pick the best epoch)
    held_out = _few("test", HELD_OUT, tmp_path)
    assert run(["evaluate", str(out), "--data", held_out, "--images", images, "--reference", str(test_a),
                "--reference-images", str(EXAMPLES / "domain_a"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for name, metric in (("grounding_dino", "bbox_AP"), ("sam", "mIoU")):
        entry = result["teachers"][name]
        kept = bool(meta["teachers"][name].get("base_kept"))
        assert set(entry) == {"data", "reference"} | ({"base_kept"} if kept else set())
        base, tuned = entry["data"]["base"], entry["data"]["tuned"]
        if kept:
            # no epoch beat the base on the 8 val images: the run kept the base, evaluate says so, and
            # the held-out scores are the base's
            assert entry["base_kept"] is True and meta["teachers"][name]["best_epoch"] == 0
            assert base == tuned, (name, base, tuned)
        else:  # the adapter changed something: some metric of the tuned model differs from the base's
            assert any(base[k] != tuned[k] for k in base if isinstance(base[k], float)), (name, base, tuned)
        assert entry["reference"]["base"][metric] > base[metric]  # the base knows A best
    # "base" is the shipped model itself: the same score as loading examples/pretrained directly.
    config = quickstart_config(plugin_host)
    for name, metric in (("grounding_dino", "bbox_AP"), ("sam", "mIoU")):
        direct = _score(plugin_host, config, name, test_a)[metric]
        assert result["teachers"][name]["reference"]["base"][metric] == pytest.approx(direct, abs=1e-6)
