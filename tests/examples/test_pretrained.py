"""The shipped pretrained tiny teachers (examples/pretrained): they load with
``from_pretrained`` and through the plugins, are small, and are what the docs say they
are — good on domain A, clearly worse on domain B, where the quick start has room to gain."""

from __future__ import annotations

import json

import pytest

from tests.examples.example_paths import EXAMPLES, PRETRAINED, QUICKSTART

CLASSES = ["square", "circle", "triangle"]
#: images of each test split scored here (the full splits are what quality.py scores)
SUBSET = 24


def quickstart_config(host, *sets):
    from teacherkit.config import resolve_config

    absolute = [f"teachers.grounding_dino.base={PRETRAINED / 'grounding_dino'}",
                f"teachers.sam.base={PRETRAINED / 'sam'}"]
    return resolve_config(host.config_model(), config_file=QUICKSTART, sets=[*absolute, *sets])


def subset(domain: str, tmp_path, n: int = SUBSET):
    """The first ``n`` images of a test split, as a COCO file whose images stay in place."""
    data = json.loads((EXAMPLES / domain / "test.json").read_text())
    data["images"] = data["images"][:n]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = tmp_path / f"{domain}_test_{n}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", ["grounding_dino", "sam"])
def test_base_folder_is_fp16_on_disk_and_loads_as_fp32(name):
    import torch
    from safetensors import safe_open
    from transformers import AutoModel, SamModel

    from teacherkit_dino.modeling import TeacherGroundingDino

    folder = PRETRAINED / name
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 4_000_000, f"{folder} is {size} bytes; the shipped base should stay a few MB"
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}
    assert "F32" not in dtypes and "F16" in dtypes
    cls = TeacherGroundingDino if name == "grounding_dino" else SamModel
    model = cls.from_pretrained(str(folder), local_files_only=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert type(AutoModel.from_pretrained(str(folder), local_files_only=True)).__name__ in (
        "GroundingDinoModel", "SamModel")


def test_dino_base_tokenizer_keeps_bert_ids_and_class_words():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(PRETRAINED / "grounding_dino"), local_files_only=True)
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "."]) == [0, 101, 102, 1012]
    for name in CLASSES:  # each class name is one token: the prompt the base was trained with
        ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id, name


def test_quickstart_config_puts_lora_where_it_can_adapt(plugin_host):
    from teacherkit.data.coco import load_coco
    from teacherkit.data.inspect import inspect_dataset

    config = quickstart_config(plugin_host)
    info = inspect_dataset(load_coco(EXAMPLES / "domain_b" / "train.json"), host=plugin_host)
    dino = plugin_host.load_model(plugin_host.teacher("grounding_dino"), config.teacher("grounding_dino"), info, None)
    report = dino.parameter_report()
    assert report.mode == "lora" and report.detail["lora"] > 0 and report.detail["box_head"] > 0
    wrapped = {n.split(".lora_A")[0] for n, _ in dino.model.named_parameters() if ".lora_A" in n}
    assert any(".swin." in n for n in wrapped) and any(".encoder.layers." in n for n in wrapped)
    assert any(".decoder.layers." in n for n in wrapped)
    assert report.trainable < 0.25 * report.total
    sam = plugin_host.load_model(plugin_host.teacher("sam"), config.teacher("sam"), info, None)
    assert sam.parameter_report().detail.get("vision_encoder.lora", 0) > 0


def _score(host, config, name, data_path):
    import torch

    from teacherkit.data.coco import load_coco
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.evaluation.run import metrics_for, predictions_for
    from teacherkit.inference.experiment import LoadedTeacher

    coco = load_coco(data_path)
    info = inspect_dataset(load_coco(EXAMPLES / "domain_b" / "train.json"), host=host)
    spec, tcfg = host.teacher(name), config.teacher(name)
    teacher = host.load_model(spec, tcfg, info, None)
    teacher.model.eval()
    loaded = LoadedTeacher(spec, teacher, host.make_preprocessor(spec, tcfg, teacher), tcfg, torch.device("cpu"))
    images = EXAMPLES / ("domain_a" if "domain_a" in data_path.name else "domain_b")
    preds = predictions_for(loaded, coco, images, info, batch_size=8)
    return metrics_for(spec.evaluation, coco.to_dict(), preds)


def test_bases_are_good_on_domain_a_and_worse_on_domain_b(plugin_host, tmp_path):
    """What pretraining bought (domain A) and what is left for the quick start (domain B)."""
    config = quickstart_config(plugin_host)
    on_a, on_b = subset("domain_a", tmp_path), subset("domain_b", tmp_path)
    dino_a = _score(plugin_host, config, "grounding_dino", on_a)["bbox_AP"]
    dino_b = _score(plugin_host, config, "grounding_dino", on_b)["bbox_AP"]
    assert dino_a >= 0.5, dino_a
    assert dino_b <= dino_a - 0.15, (dino_a, dino_b)
    sam_a = _score(plugin_host, config, "sam", on_a)["mIoU"]
    sam_b = _score(plugin_host, config, "sam", on_b)["mIoU"]
    assert sam_a >= 0.75, sam_a
    assert sam_b <= sam_a - 0.1, (sam_a, sam_b)
