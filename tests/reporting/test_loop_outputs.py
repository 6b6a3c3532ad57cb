"""Through the training loop with a small real teacher (the example keypoint plugin):
results.csv grows one row per epoch with the learning rate, and a teacher scored neither
as boxes nor as masks gets no pictures (and no warning)."""

from __future__ import annotations

import pytest

from teacherkit.reporting.paths import ReportPaths
from teacherkit.reporting.results import read_results_csv
from teacherkit.training.trainer import TeacherTrainer
from tests.training.conftest import keypoint_plugin

TEACHER = "keypoint_centroid"


@pytest.fixture
def kp_host():
    from teacherkit.plugins import get_plugin_manager

    return get_plugin_manager(extra_plugins=[("kp-test", keypoint_plugin())], disabled={"keypoints-example"})


@pytest.fixture
def kp_data(tiny_coco):
    train = tiny_coco(num_images=12, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=1)
    val = tiny_coco(num_images=4, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=2)
    return train, val


@pytest.mark.slow
def test_results_csv_follows_the_loop(kp_host, kp_data, tmp_path, capsys):
    from teacherkit.config import resolve_config

    sets = {"training.epochs": 3, "training.batch_size": 4, "training.num_workers": 0, "training.lr": 1e-2}
    config = resolve_config(kp_host.config_model(), sets=[f"{k}={v}" for k, v in sets.items()])
    out = tmp_path / "exp"
    history = TeacherTrainer(kp_data[0], kp_data[1], None, out, config, host=kp_host,
                             quiet=True).train()[TEACHER].history
    paths = ReportPaths.of(out, TEACHER)
    rows = read_results_csv(paths.results_csv)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]  # epoch 0: the base, scored before training
    assert rows[0]["train_loss"] is None and rows[0]["lr"] is None and rows[0]["val_loss"] == history[0]["val_loss"]
    for row, logged in zip(rows[1:], history[1:], strict=True):
        assert row["train_loss"] == logged["train_loss"] and row["val_loss"] == logged["val_loss"]
        assert row["lr"] == logged["lr"] > 0 or row["epoch"] == 3
    assert rows[1]["lr"] > rows[2]["lr"]  # the cosine schedule, as the loop stepped it
    assert paths.results_png.is_file()
    assert not paths.pictures.exists() and not paths.curves_json.exists()
    assert "pictures" not in capsys.readouterr().err
