"""The method registry (unlearn/__init__.py) and everything derived from it."""
import importlib

import pytest

import arg_parser
from stages.configs import check_method, unlearn_config
from unlearn import METHODS, NOOP, canonical_method, get_method, method_names, step_methods
from unlearn.base import UnlearnConfig
from unlearn.config import method_tag


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_has_a_module_a_label_and_help(name):
    m = METHODS[name]
    module, fn = m.target.split(":")
    assert callable(getattr(importlib.import_module(module), fn))
    assert get_method(name) is getattr(importlib.import_module(module), fn)
    assert m.label and m.help
    assert m.saliency in ("required", "optional", "never")
    assert set(m.defaults) <= set(m.hparams)


@pytest.mark.parametrize("name", list(METHODS))
def test_tag_round_trips_to_the_method_and_its_hyperparameters(name):
    """The tag starts with the method's name, holds each registered hyperparameter's value, and two
    configs differing in one of them get different tags."""
    argv = ["--unlearn", name] + (["--path", "masks/mask_largest_0.5.pt"] if METHODS[name].saliency == "required" else [])
    args = arg_parser.parse_args(argv)
    check_method(args)
    cfg = unlearn_config(args)
    tag = method_tag(name, cfg, args.path)
    assert tag == name or tag.startswith(name + "_")
    # the longest registered name the tag starts with is the method (FT_l1 before FT)
    assert max((m for m in METHODS if tag == m or tag.startswith(m + "_")), key=len) == name
    for h in METHODS[name].hparams:
        other = unlearn_config(args)
        setattr(other, h, (getattr(cfg, h) or 0) + 1)
        assert method_tag(name, other, args.path) != tag, h
    if METHODS[name].iterative and name != "retrain":
        other = unlearn_config(args)
        other.lr = cfg.lr * 2
        assert method_tag(name, other, args.path) != tag


def test_parser_choices_and_rum_steps_derive_from_the_registry():
    assert arg_parser.UNLEARN_METHODS == method_names(with_rum=True)
    assert "retrain" not in step_methods() and "original" not in step_methods()
    assert set(NOOP) == {"raw", "original"}
    assert canonical_method("ng") == "NG" and canonical_method("rum") == "RUM"


def test_config_defaults_equal_the_parser_defaults():
    """Tags drop the batch size and milestones when they equal UnlearnConfig's defaults: those must
    be the parser's defaults, or every tag would silently change."""
    d, args = UnlearnConfig(), arg_parser.parse_args([])
    assert d.batch_size == args.batch_size and tuple(d.milestones) == tuple(args.decreasing_lr)
    assert d.lr == args.unlearn_lr and d.epochs == args.unlearn_epochs and d.alpha == args.alpha
    assert d.momentum == args.momentum and d.weight_decay == args.weight_decay
    assert d.optimizer == args.unlearn_optimizer and d.no_l1_epochs == args.no_l1_epochs
