"""``label --score-threshold``: parsing (one number, per class, both), the default recorded by
training (best F1 on val), the cut before SAM, and what the output's ``info`` records."""

from __future__ import annotations

import json
import shutil

import pytest

from teacherkit.cli import run
from teacherkit.errors import TeacherkitError
from teacherkit.inference.label_thresholds import FLAG, ScoreThresholds, parse_score_threshold, with_recorded_default

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}, {"id": 5, "name": "triangle"}]


def test_one_number_is_the_cut_of_every_class():
    cut = parse_score_threshold("0.3", CATEGORIES)
    assert cut.default == 0.3 and cut.default_from == FLAG and cut.per_class == {}
    assert [cut.cut(c["id"]) for c in CATEGORIES] == [0.3, 0.3, 0.3]
    assert cut.keeps({"category_id": 2, "score": 0.3}) and not cut.keeps({"category_id": 2, "score": 0.2999})


def test_per_class_cuts_by_name_over_a_number_for_the_rest():
    cut = parse_score_threshold(" square=0.4 , triangle=0.2", CATEGORIES)
    assert cut.default is None and cut.per_class == {1: 0.4, 5: 0.2} and cut.cut(2) is None
    assert cut.record() == {"default": None, "default_from": None, "per_class": {"square": 0.4, "triangle": 0.2}}
    both = parse_score_threshold("0.3,circle=0.9", CATEGORIES)
    assert [both.cut(c["id"]) for c in CATEGORIES] == [0.3, 0.9, 0.3]


def test_nothing_given_means_no_cut():
    cut = parse_score_threshold(None, CATEGORIES)
    assert not cut.active and cut.keeps({"category_id": 1, "score": 0.0})


@pytest.mark.parametrize(("spec", "says"), [
    ("dog=0.2", "not a class of this experiment; classes: square, circle, triangle"),
    ("squares=0.2", "did you mean 'square'?"),
    ("1.5", "must be in [0, 1]"), ("nan", "must be in [0, 1]"), ("square=-0.1", "must be in [0, 1]"),
    ("high", "is not a number"), ("square=0.1,square=0.2", "given twice"), ("0.1,0.2", "one number"),
])
def test_bad_thresholds_are_refused_with_the_reason(spec, says):
    with pytest.raises(TeacherkitError, match=FLAG) as raised:
        parse_score_threshold(spec, CATEGORIES)
    assert says in str(raised.value)


def test_the_recorded_threshold_is_the_default_unless_a_number_is_given(tmp_path):
    (tmp_path / "curves.json").write_text(json.dumps({"best_threshold": 0.42}))
    cut = with_recorded_default(parse_score_threshold("square=0.9", CATEGORIES), tmp_path)
    assert cut.default == 0.42 and cut.default_from == str(tmp_path / "curves.json") and cut.cut(1) == 0.9
    given = with_recorded_default(parse_score_threshold("0.1", CATEGORIES), tmp_path)
    assert given.default == 0.1 and given.default_from == FLAG
    assert with_recorded_default(ScoreThresholds(), tmp_path / "none").default is None


# -- on the tiny trained experiment ----------------------------------------------------


@pytest.fixture
def labelled(tiny_experiment, tmp_path):
    """A copy of the experiment (its curves.json is edited) and a labelling function."""
    exp = tmp_path / "exp"
    shutil.copytree(tiny_experiment["path"], exp)
    images = tmp_path / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, images, ignore=shutil.ignore_patterns("*.json"))

    def label(name, *extra):
        out = tmp_path / name
        assert run(["label", str(exp), "--images", str(images), "--output", str(out), "--device", "cpu",
                    *extra]) == 0
        return json.loads(out.read_text())

    return exp, label


def _between_scores(annotations) -> float:
    """A cut half-way between two scores far enough apart that rounding cannot matter."""
    scores = sorted({a["score"] for a in annotations})
    gaps = [(b - a, (a + b) / 2) for a, b in zip(scores, scores[1:], strict=False) if b - a > 1e-4]
    assert gaps, scores
    return round(gaps[len(gaps) // 2][1], 6)


def _key(ann):
    return ann["image_id"], ann["category_id"], tuple(ann["bbox"]), ann["score"]


@pytest.mark.slow
def test_label_cuts_at_the_recorded_threshold_before_sam(labelled, capsys, monkeypatch):
    from teacherkit.inference.experiment import LoadedTeacher

    exp, label = labelled
    prompted: list[int] = []
    original = LoadedTeacher.predict_samples

    def counting(self, samples):
        if self.spec.name == "sam":
            prompted.append(sum(len(s["boxes"]) for s in samples))
        return original(self, samples)

    monkeypatch.setattr(LoadedTeacher, "predict_samples", counting)
    every = label("all.json", FLAG, "0")
    assert "score threshold" not in capsys.readouterr().err
    uncut_prompts = sum(prompted)
    cut = _between_scores(every["annotations"])
    curves = exp / "teachers" / "grounding_dino" / "curves.json"
    curves.write_text(json.dumps({**json.loads(curves.read_text()), "best_threshold": cut}))

    prompted.clear()
    data = label("default.json")
    err = capsys.readouterr().err
    assert f"score threshold {cut:g} (best F1 on val, from {curves})" in err
    kept = [a for a in every["annotations"] if a["score"] >= cut]
    assert sorted(map(_key, data["annotations"])) == sorted(map(_key, kept))
    assert 0 < len(kept) < len(every["annotations"])
    assert len(kept) <= sum(prompted) < uncut_prompts  # SAM saw the kept boxes only
    info = data["info"]
    assert info["score_thresholds"] == {"default": cut, "default_from": str(curves), "per_class": {}}
    assert info["experiment"] == str(exp) and info["annotations"] == len(kept)
    assert info["below_score_threshold"] == len(every["annotations"]) - len(kept)
    assert sum(info["annotations_per_class"].values()) == len(kept)

    label("quiet.json", "--quiet")
    assert "score threshold" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_class_cut_by_name_over_the_recorded_default(labelled, capsys):
    exp, label = labelled
    curves = exp / "teachers" / "grounding_dino" / "curves.json"
    curves.write_text(json.dumps({**json.loads(curves.read_text()), "best_threshold": 0.5}))
    data = label("square.json", FLAG, "square=1")
    assert "score threshold 0.5" in capsys.readouterr().err  # the rest of the classes keep the recorded one
    assert data["annotations"] and all(a["score"] >= 0.5 for a in data["annotations"])
    assert all(a["score"] == 1.0 for a in data["annotations"] if a["category_id"] == 1)  # only a saturated score
    assert data["info"]["score_thresholds"]["per_class"] == {"square": 1.0}


def test_an_unknown_class_is_refused_before_labelling(tiny_experiment, tmp_path, capsys):
    out = tmp_path / "o.json"
    assert run(["label", str(tiny_experiment["path"]), "--images", str(tiny_experiment["test"].parent),
                "--output", str(out), FLAG, "dog=0.2"]) == 2
    err = capsys.readouterr().err
    assert "'dog'" in err and "square, circle, triangle" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "o.json.partial.jsonl").exists()
