"""The registry: every built-in entry is complete, unknown names get the closest
match, other plugins add characteristics through the hook, and the plugin module
stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from teacherkit import hookimpl
from teacherkit.errors import TeacherkitError
from teacherkit.plugins import PluginError
from teacherkit.teachers import CharacteristicSpec
from teacherkit_augment import get_augmentation_registry
from teacherkit_augment.characteristics import BUILTIN_CHARACTERISTICS, INTENSITIES
from teacherkit_augment.registry import AugmentationError, AugmentationRegistry

REQUIRED_OBJECTS = {"changes_shape", "rigid", "reflective_surface", "transparent", "textureless", "small_objects",
                    "thin_structures", "rotation_invariant", "symmetric", "occluded", "moving"}
REQUIRED_ENVIRONMENT = {"lighting": {"fixed", "variable"}, "camera": {"fixed", "handheld", "moving"},
                        "background": {"plain", "cluttered"}, "weather": {"clear", "rain", "fog", "snow"}}


def test_builtin_set_covers_the_issue_and_every_entry_builds_at_every_intensity():
    registry = AugmentationRegistry(BUILTIN_CHARACTERISTICS)
    assert REQUIRED_OBJECTS <= set(registry.names("object"))
    for fact, values in REQUIRED_ENVIRONMENT.items():
        assert values <= set(registry.get(fact).values)
    for spec in registry.specs:
        assert spec.why and "\n" not in spec.why and len(spec.why) < 130
        for value in spec.values or (None,):
            for intensity in INTENSITIES:
                assert spec.build(value, intensity), f"{spec.name}={value} at {intensity} builds nothing"


def test_the_installed_plugin_contributes_the_builtin_set(plugin_host):
    registry = get_augmentation_registry(plugin_host)
    assert {s.name for s in registry.specs} >= REQUIRED_OBJECTS
    assert {s.plugin for s in registry.specs} == {"augment"}


@pytest.mark.parametrize(("request_", "message"), [
    ({"characteristics": ["reflectve_surface"]},
     "unknown characteristic 'reflectve_surface'; did you mean 'reflective_surface'? (valid: changes_shape, rigid"),
    ({"environment": {"lightning": "variable"}},
     "unknown environment fact 'lightning'; did you mean 'lighting'? (valid: lighting, camera, background, weather)"),
    ({"environment": {"camera": "hand-held"}},
     "environment.camera: unknown value 'hand-held'; did you mean 'handheld'? (valid: fixed, handheld, moving)"),
    ({"intensity": "strong"}, "unknown intensity 'strong' (valid: low, medium, high)"),
    ({"characteristics": ["camera"]}, "'camera' is an environment fact and takes a value"),
    ({"environment": {"moving": "yes"}}, "'moving' is an object characteristic, not an environment fact"),
])
def test_unknown_names_list_valid_ones_with_closest_match(request_, message):
    registry = AugmentationRegistry(BUILTIN_CHARACTERISTICS)
    with pytest.raises(AugmentationError) as info:
        registry.get_pipeline(source="augmentation", **request_)
    assert message in str(info.value)
    assert isinstance(info.value, TeacherkitError)


def _underwater(value, intensity):
    import albumentations as A

    shift = {"low": 10, "medium": 20, "high": 40}[intensity]
    return [A.RGBShift(r_shift_limit=(-shift, 0), g_shift_limit=0, b_shift_limit=(0, shift), p=1.0)]


class UnderwaterPlugin:
    @hookimpl
    def teacherkit_augmentations(self):
        return [CharacteristicSpec("water", "environment", "colour cast under water", _underwater,
                                   values=("shallow", "deep"))]


class ClashingPlugin:
    @hookimpl
    def teacherkit_augmentations(self):
        return [CharacteristicSpec("rigid", "object", "again", _underwater)]


def test_another_plugin_adds_a_characteristic_through_the_hook(register_plugin, plugin_host):
    import numpy as np

    register_plugin(UnderwaterPlugin(), "underwater")
    registry = get_augmentation_registry(plugin_host)
    spec = registry.get("water")
    assert spec.plugin == "underwater" and spec.values == ("shallow", "deep")
    pipeline = registry.get_pipeline(["rigid"], {"water": "deep"}, seed=0)
    assert "RGBShift" in [type(t).__name__ for t in pipeline.transforms]
    out = pipeline(image=np.full((16, 16, 3), 128, np.uint8))
    assert out["image"][..., 2].mean() > out["image"][..., 0].mean()  # the cast is applied
    with pytest.raises(AugmentationError, match=r"unknown value 'shalow'; did you mean 'shallow'"):
        registry.get_pipeline(environment={"water": "shalow"})


def test_a_duplicate_characteristic_names_both_plugins(register_plugin, plugin_host):
    register_plugin(ClashingPlugin(), "clash")
    with pytest.raises(PluginError, match=r"'rigid' is declared by both '(augment|clash)' and '(augment|clash)'"):
        get_augmentation_registry(plugin_host)


def test_a_broken_builder_names_its_plugin():
    def broken(value, intensity):
        raise RuntimeError("boom")

    registry = AugmentationRegistry([CharacteristicSpec("broken", "object", "x", broken, plugin="thirdparty")])
    with pytest.raises(PluginError, match="building augmentation 'broken' of plugin 'thirdparty' failed: boom"):
        registry.get_pipeline(["broken"])


def test_plugin_and_commands_modules_import_nothing_heavy():
    code = ("import sys, teacherkit_augment.plugin, teacherkit_augment.commands, teacherkit_augment.registry;"
            "heavy = [m for m in ('albumentations', 'cv2', 'torch', 'transformers', 'PIL.Image') if m in sys.modules];"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
