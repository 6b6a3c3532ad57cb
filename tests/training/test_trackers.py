"""Trackers through accelerate (``training.trackers``): TensorBoard event files that
TensorBoard's own reader reads back, a local MLflow file store, and the errors for a
tracker that is unknown or not installed."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from teacherkit.training.tracking import (
    DEFAULT_TRACKERS,
    TensorBoardLog,
    TrackerError,
    TrackerLog,
    check_trackers,
    configured_trackers,
)


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _log_two_epochs(log: TrackerLog) -> None:
    log.scalars("train", {"loss": 2.0, "loss_bbox": 0.5}, 1)
    log.scalars("train", {"loss": 1.0, "loss_bbox": 0.25}, 2)
    log.scalars("val", {"bbox_AP": 0.125, "bbox_per_class_AP/cup (red)": 0.5}, 1)
    log.image("val/predictions", np.full((12, 20, 3), 200, np.uint8), 1)
    log.close()


def test_tensorboard_is_the_default_and_its_reader_reads_scalars_and_the_grid(tmp_path):
    log_dir = tmp_path / "exp" / "logs" / "grounding_dino"
    log = TensorBoardLog(log_dir)  # the training hooks' name and call
    assert TensorBoardLog is TrackerLog and log.names == list(DEFAULT_TRACKERS) == ["tensorboard"]
    _log_two_epochs(log)
    assert list(log_dir.glob("events.out.tfevents.*"))  # straight in logs/<teacher>/, as before
    events = _events(log_dir)
    loss = events.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(1, 2.0), (2, 1.0)]
    assert [e.value for e in events.Scalars("val/bbox_per_class_AP/cup (red)")] == [0.5]
    (image,) = events.Images("val/predictions")
    assert (image.step, image.width, image.height) == (1, 20, 12)
    log.close()  # a second close does nothing


def test_off_the_main_process_nothing_is_written(tmp_path):
    log = TrackerLog(None, ["tensorboard", "no-such-tracker"])  # not even checked: only rank 0 logs
    log.scalars("train", {"loss": 1.0}, 1)
    log.image("val/predictions", np.zeros((4, 4, 3), np.uint8), 1)
    log.close()
    assert log.names == [] and not list(tmp_path.iterdir())


def test_an_empty_list_turns_tracking_off(tmp_path):
    log = TrackerLog(tmp_path / "logs" / "sam", [])
    _log_two_epochs(log)
    assert not list((tmp_path / "logs" / "sam").iterdir())


def test_the_config_field_defaults_to_tensorboard():
    assert configured_trackers(SimpleNamespace()) == ["tensorboard"]  # before config.py has the field
    assert configured_trackers(SimpleNamespace(trackers=None)) == ["tensorboard"]
    assert configured_trackers(SimpleNamespace(trackers=["tensorboard", "mlflow"])) == ["tensorboard", "mlflow"]
    assert configured_trackers(SimpleNamespace(trackers=[])) == []


def test_an_unknown_tracker_is_refused_with_the_known_names(tmp_path):
    with pytest.raises(TrackerError, match=r"'tensorbored' is not a tracker accelerate knows \(known: .*tensorboard"):
        TrackerLog(tmp_path / "logs" / "sam", ["tensorbored"])
    assert not (tmp_path / "logs").exists()  # checked before anything is written
    assert check_trackers(["tensorboard", "tensorboard"]) == ["tensorboard"]


def test_a_tracker_without_its_package_says_what_to_install():
    missing = next((name for name, module in (("wandb", "wandb"), ("aim", "aim"), ("dvclive", "dvclive"),
                                               ("swanlab", "swanlab"), ("clearml", "clearml"))
                    if importlib.util.find_spec(module) is None), None)
    if missing is None:
        pytest.skip("every tracker package this test could name is installed")
    with pytest.raises(TrackerError, match=rf"'{missing}' needs the package {missing}.*pip install {missing}"):
        check_trackers(["tensorboard", missing])


def test_mlflow_file_store_gets_scalars_per_teacher_run_and_the_grid(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow-skinny)")
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database otherwise
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    log_dir = tmp_path / "quickstart" / "logs" / "grounding_dino"
    log = TrackerLog(log_dir, ["tensorboard", "mlflow"], config={"lr": 0.003, "epochs": 2})
    assert log.names == ["tensorboard", "mlflow"]
    _log_two_epochs(log)
    assert _events(log_dir).Scalars("train/loss")[-1].value == 1.0  # both trackers got the values

    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("quickstart")  # the experiment folder's name
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "grounding_dino" and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [(1, 2.0), (2, 1.0)]
    # MLflow refuses "(" in a metric name: the class name's refused characters become "_"
    assert run.data.metrics["val/bbox_per_class_AP/cup _red_"] == 0.5
    assert run.data.params == {"lr": "0.003", "epochs": "2"}
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any(path.endswith(".png") and "predictions" in path for path in artifacts)


def test_a_tracker_failing_mid_run_is_named_once_and_dropped(tmp_path, capsys):
    log = TrackerLog(tmp_path / "logs" / "sam")
    log.trackers[0].writer.close()
    log.trackers[0].writer = None  # the writer gone, as a remote tracker's server might be
    log.scalars("train", {"loss": 1.0}, 1)
    log.scalars("train", {"loss": 0.5}, 2)
    log.close()
    err = capsys.readouterr().err
    assert err.count("warning: tracker tensorboard: AttributeError") == 1
    assert "records nothing more in this run" in err and log.names == []


def test_a_tracker_that_cannot_start_is_a_trackers_error(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow-skinny)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses a file store without it
    with pytest.raises(TrackerError, match="training.trackers: mlflow could not start: MlflowException"):
        TrackerLog(tmp_path / "exp" / "logs" / "sam", ["tensorboard", "mlflow"])


def test_train_logs_to_the_trackers_the_config_names(kp_host, kp_data, tmp_path, monkeypatch):
    """End to end: ``training.trackers: [tensorboard, mlflow]`` reaches the training loop,
    and each teacher's run gets its scalars and its settings."""
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow-skinny)")
    from mlflow.tracking import MlflowClient

    from teacherkit.cli import run
    from teacherkit.plugins import set_current_host

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    set_current_host(kp_host)
    try:
        code = run(["train", "--data", str(kp_data[0]), "--val", str(kp_data[1]), "--output", str(tmp_path / "exp"),
                    "--epochs", "2", "--batch-size", "4", "--num-workers", "0", "--quiet",
                    "--set", "training.lr=0.01", "--set", "training.trackers=[tensorboard, mlflow]"])
    finally:
        set_current_host(None)
    assert code == 0
    client = MlflowClient(tracking_uri=store.as_uri())
    (mlrun,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert mlrun.info.run_name == "keypoint_centroid"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "val/centroid_error_px")] == [0, 1, 2]
    assert mlrun.data.params["epochs"] == "2" and mlrun.data.params["lr"] == "0.01"
    assert _events(tmp_path / "exp" / "logs" / "keypoint_centroid").Scalars("val/centroid_error_px")
