"""evaluate, label, export and the adapter-scale guard on a tiny trained experiment."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from teacherkit.cli import run
from teacherkit.inference import load_experiment

pytestmark = pytest.mark.slow


def test_evaluate_prints_base_and_tuned(tiny_experiment, capsys):
    exp, test = tiny_experiment["path"], tiny_experiment["test"]
    assert run(["evaluate", str(exp), "--data", str(test), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    gd, sam = result["teachers"]["grounding_dino"]["data"], result["teachers"]["sam"]["data"]
    assert {"base", "tuned"} <= set(gd) and {"base", "tuned"} <= set(sam)
    for metrics in (gd["base"], gd["tuned"]):
        assert 0.0 <= metrics["bbox_AP"] <= 1.0 and "bbox_per_class_AP" in metrics
    assert sam["tuned"]["num_instances"] > 0 and 0.0 <= sam["tuned"]["mIoU"] <= 1.0
    # the table view names both columns and the retention column with --reference
    assert run(["evaluate", str(exp), "--data", str(test), "--reference", str(tiny_experiment["train"]),
                "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if "metric" in line)
    for column in ("base", "tuned", "ref base", "ref tuned", "gain", "retention"):
        assert column in header, column
    assert "bbox_AP" in table and "mIoU" in table


def test_evaluate_refuses_a_file_with_nothing_to_score(tiny_experiment, tmp_path, capsys):
    exp, test = tiny_experiment["path"], tiny_experiment["test"]
    data = json.loads(test.read_text())
    no_annotations = tmp_path / "no_annotations.json"
    no_annotations.write_text(json.dumps({**data, "annotations": []}))
    no_images = tmp_path / "no_images.json"
    no_images.write_text(json.dumps({**data, "images": [], "annotations": []}))
    for path, what in ((no_annotations, "no annotations"), (no_images, "no images")):
        assert run(["evaluate", str(exp), "--data", str(path), "--images", str(test.parent), "--device", "cpu"]) == 2
        captured = capsys.readouterr()
        assert "nothing to score" in captured.err and what in captured.err and str(path) in captured.err
        assert "Traceback" not in captured.err and "AP" not in captured.out


def test_evaluate_without_a_trained_model_is_an_error(tiny_experiment, tmp_path, capsys):
    from teacherkit.inference.experiment import ExperimentError

    source, test = tiny_experiment["path"], tiny_experiment["test"]
    exp = tmp_path / "stopped"
    exp.mkdir()
    for name in ("teacher_config.yaml", "dataset_info.json", "metadata.json"):
        shutil.copy(source / name, exp / name)
    (exp / "teachers" / "sam" / "checkpoints").mkdir(parents=True)  # started, never saved a model
    assert run(["evaluate", str(exp), "--data", str(test), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no trained model" in err and "teachers/sam has no adapter" in err and "--resume" in err
    assert "Traceback" not in err
    with pytest.raises(ExperimentError, match="no trained model"):
        load_experiment(exp, device="cpu").predict([test.parent / "img_0000.png"])


def test_evaluate_shows_a_dash_for_a_class_without_ground_truth(tiny_experiment, tmp_path, capsys):
    exp, test = tiny_experiment["path"], tiny_experiment["test"]
    data = json.loads(test.read_text())
    gone = data["categories"][-1]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != gone["id"]]
    assert data["annotations"]
    path = tmp_path / "without_one_class.json"
    path.write_text(json.dumps(data))
    args = ["evaluate", str(exp), "--data", str(path), "--images", str(test.parent), "--device", "cpu",
            "--models", "grounding_dino"]
    assert run([*args, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["teachers"]["grounding_dino"]["data"]
    assert metrics["base"]["bbox_per_class_AP"][gone["name"]] is None
    assert metrics["tuned"]["bbox_per_class_AP"][gone["name"]] is None
    assert run(args) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if gone["name"] in line)
    assert "\u2013" in row and "0.0000" not in row


def test_adapter_scale_zero_equals_the_base_model(tiny_experiment):
    exp = load_experiment(tiny_experiment["path"], device="cpu")
    from teacherkit.data.samples import read_image
    from teacherkit.inference.experiment import empty_sample

    image = read_image(tiny_experiment["test"].parent / "img_0000.png")
    sample = empty_sample(image, 1)
    base = exp.teacher("grounding_dino", adapter=False).predict_samples([sample])
    zero = exp.teacher("grounding_dino", adapter_scale=0.0).predict_samples([sample])
    tuned = exp.teacher("grounding_dino").predict_samples([sample])
    assert base == zero
    assert base != tuned  # the adapter changed something, so the equality above means something


def test_label_writes_valid_coco_with_masks_and_skips_unreadable(tiny_experiment, tmp_path, capsys):
    from pycocotools.coco import COCO

    from teacherkit.data.validate import validate_coco

    images = tmp_path / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, images, ignore=shutil.ignore_patterns("*.json"))
    (images / "sub").mkdir()
    shutil.copy(images / "img_0000.png", images / "sub" / "copy.png")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pseudo.json"
    assert run(["label", str(tiny_experiment["path"]), "--images", str(images), "--output", str(out),
                "--device", "cpu", "--box-threshold", "0", "--text-threshold", "0"]) == 0
    captured = capsys.readouterr()
    assert "skipped broken.png" in captured.err and "Traceback" not in captured.err
    data = json.loads(out.read_text())
    assert sorted(i["file_name"] for i in data["images"]) == ["img_0000.png", "img_0001.png", "img_0002.png",
                                                              "sub/copy.png"]
    assert data["annotations"], "expected detections with thresholds at 0"
    assert all("score" in a for a in data["annotations"])
    # SAM's masks ride along; an empty mask is left out rather than invented
    assert any("segmentation" in a for a in data["annotations"])
    assert data["info"]["empty_masks"] == sum(1 for a in data["annotations"] if "segmentation" not in a)
    assert [c["name"] for c in data["categories"]] == ["square", "circle", "triangle"]
    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == len(data["annotations"])
    coco.annToMask(data["annotations"][0])
    report = validate_coco(out, images_dir=images)
    assert report.exit_code == 0, [f.code for f in report.findings if f.severity == "error"]
    assert not (tmp_path / "pseudo.json.partial.jsonl").exists()
    # an existing output is not overwritten without the flag
    assert run(["label", str(tiny_experiment["path"]), "--images", str(images), "--output", str(out)]) == 2


def test_label_resume_continues_a_partial_run(tiny_experiment, tmp_path):
    from teacherkit.inference.label import label_images, partial_path

    exp = load_experiment(tiny_experiment["path"], device="cpu")
    images = tiny_experiment["test"].parent
    straight = tmp_path / "straight.json"
    label_images(exp, images, straight, batch_size=1)

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done >= 2:
            raise Stop

    out = tmp_path / "resumed.json"
    with pytest.raises(Stop):
        label_images(exp, images, out, batch_size=1, progress=stop_after_two)
    assert not out.exists() and partial_path(out).exists()
    lines = partial_path(out).read_text().splitlines()
    assert len(lines) == 2
    with pytest.raises(Exception, match="--resume"):
        label_images(exp, images, out, batch_size=1)
    report = label_images(exp, images, out, batch_size=1, resume=True)
    assert report.resumed_from == 2 and report.labelled == 3
    assert json.loads(out.read_text()) == json.loads(straight.read_text())


def test_export_merge_matches_adapter_outputs(tiny_experiment, tmp_path):
    import torch
    from transformers import GroundingDinoForObjectDetection, SamModel

    from teacherkit.data.samples import move_to_device

    assert run(["export", str(tiny_experiment["path"]), "--output", str(tmp_path / "merged"), "--merge"]) == 0
    assert run(["export", str(tiny_experiment["path"]), "--output", str(tmp_path / "bundle")]) == 0
    assert (tmp_path / "bundle" / "grounding_dino" / "adapter" / "adapter_config.json").is_file()

    exp = load_experiment(tiny_experiment["path"], device="cpu")
    from teacherkit.data.samples import read_image
    from teacherkit.inference.experiment import empty_sample, prompted_sample

    image = read_image(tiny_experiment["test"].parent / "img_0001.png")

    gd = exp.teacher("grounding_dino")
    batch = move_to_device(gd.preprocessor.collate([gd.preprocessor(empty_sample(image, 1), train=False)]), "cpu")
    merged = GroundingDinoForObjectDetection.from_pretrained(tmp_path / "merged" / "grounding_dino").eval()
    with torch.no_grad():
        expected = gd.teacher.forward(gd.teacher.model, batch)
        got = gd.teacher.forward(merged, batch)
    assert torch.allclose(expected["logits"], got["logits"], atol=1e-4)
    assert torch.allclose(expected["pred_boxes"], got["pred_boxes"], atol=1e-5)

    sam = exp.teacher("sam")
    dets = [{"bbox": [5.0, 5.0, 20.0, 20.0], "category_id": 1}]
    sbatch = sam.preprocessor.collate([sam.preprocessor(prompted_sample(image, 1, dets), train=False)])
    merged_sam = SamModel.from_pretrained(tmp_path / "merged" / "sam").eval()
    with torch.no_grad():
        a = sam.teacher.forward(sam.teacher.model, {**sbatch, "prompt_kind": "box", "multimask": False})
        b = sam.teacher.forward(merged_sam, {**sbatch, "prompt_kind": "box", "multimask": False})
    assert torch.allclose(a["pred_masks"], b["pred_masks"], atol=1e-4)
    assert np.isfinite(a["iou_scores"].numpy()).all()


def test_python_api_predicts_boxes_and_masks(tiny_experiment):
    """The README's few-line API: paths in, detections with class names and masks out."""
    exp = load_experiment(tiny_experiment["path"], device="cpu")
    assert exp.teacher_names == ["grounding_dino", "sam"]
    folder = tiny_experiment["test"].parent
    results = exp.predict([folder / "img_0000.png", str(folder / "img_0001.png")], batch_size=1)
    assert len(results) == 2
    dets = [d for per_image in results for d in per_image]
    assert dets, "thresholds are 0 in this experiment, so there are detections"
    for det in dets:
        assert det["category_name"] in {"square", "circle", "triangle"}
        assert len(det["bbox"]) == 4 and 0.0 <= det["score"] <= 1.0
    assert any("segmentation" in d for d in dets)
