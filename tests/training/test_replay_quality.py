"""examples/quality.py compares like with like: LoRA and full fine-tuning share the quick
start's schedule and data recipe (its replay of domain A), and only the fine-tuning mode and
learning rate differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples.example_paths import EXAMPLES


@pytest.fixture
def quality():
    import quality  # examples/ is on sys.path through tests.examples.example_paths

    return quality


def test_both_runs_share_the_quickstart_replay_recipe(quality, plugin_host):
    lora = quality.run_config(plugin_host, "lora", 42)
    full = quality.run_config(plugin_host, "full", 42)
    assert quality.recipe(lora) == quality.recipe(full)
    replay = lora.training.replay
    assert replay.data and Path(replay.data).is_absolute()  # works from any folder
    assert Path(replay.data) == EXAMPLES / "domain_a" / "train.json" and replay.fraction > 0
    assert lora.teacher("grounding_dino").finetune == "lora" and full.teacher("grounding_dino").finetune == "full"
    assert full.teacher("sam").finetune == "full"


def test_set_changes_both_runs(quality, plugin_host):
    sets = ["training.replay.data=null", "training.epochs=12"]
    lora, full = (quality.run_config(plugin_host, run, 42, sets) for run in ("lora", "full"))
    assert quality.recipe(lora) == quality.recipe(full)
    assert lora.training.replay.data is None and full.training.epochs == 12
    assert full.training.lr == 1e-3 and lora.training.lr == 3e-3  # full keeps its own learning rate
