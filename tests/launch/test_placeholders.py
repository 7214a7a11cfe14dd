"""launch/spec.py: ``{flag}`` placeholders in a stage's string values."""
import pytest

from launch.spec import expand, fill_placeholders, stage_from_obj
from utils.errors import UserError


def test_placeholders_take_the_commands_values_or_the_defaults():
    stage = stage_from_obj({"script": "generate_mask.py",
                            "fixed": {"save": "{ckpts}/masks/{dataset}_{mem}_seed{seed}", "dataset": "digits",
                                      "path": "x/mask_largest_{mask_ratio}.pt {{literal}}"},
                            "grid": {"mem": ["low", "high"], "seed": [1, 2], "mask_ratio": [[0.5]]}}, "t")
    runs = expand(stage)
    assert [r["save"] for r in runs] == ["ckpts/masks/digits_low_seed1", "ckpts/masks/digits_low_seed2",
                                         "ckpts/masks/digits_high_seed1", "ckpts/masks/digits_high_seed2"]
    assert runs[0]["path"] == "x/mask_largest_0.5.pt {literal}"
    assert fill_placeholders({"save": ["{seed}", 3], "seed": 4, "no-l1-epochs": 1}, "t") == \
        {"save": ["4", 3], "seed": 4, "no-l1-epochs": 1}


@pytest.mark.parametrize("point,match", [
    ({"save": "{sede}"}, "unknown flag 'sede'; did you mean 'seed'"),
    ({"save": "{mem}"}, "has no value here"),
    ({"save": "{no_aug}", "no_aug": True}, "has no value here"),
    ({"save": "{path}", "path": "{seed}"}, "holds a placeholder"),
])
def test_bad_placeholders(point, match):
    with pytest.raises(UserError, match=match):
        fill_placeholders(point, "t")
