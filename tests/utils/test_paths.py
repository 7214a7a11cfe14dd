"""utils/paths.py: the layout of a --ckpts tree (DESIGN.md §4) comes from one module."""
from __future__ import annotations

from pathlib import Path

import pytest

from utils import paths


def test_ckpts_tree_layout(tmp_path: Path) -> None:
    c = tmp_path / "ckpts"
    assert paths.unlearn_root(c) == c / "unlearn"
    assert paths.unlearn_run_dir(c, "mem-high_n3000", "cifar100_resnet50_sgd", "FT_lr0.01", 2) == \
        c / "unlearn" / "mem-high_n3000" / "cifar100_resnet50_sgd" / "FT_lr0.01" / "seed2"
    assert paths.analysis_dir(c) == c / "analysis"
    assert paths.audit_dir(c) == c / "audit"
    assert paths.forget_set_path(c, "mem-low_n90") == c / "forget_sets" / "mem-low_n90.npz"
    assert paths.memorization_dir(str(c)) == c / "memorization"


def test_stages_use_the_layout(monkeypatch, tmp_path: Path) -> None:
    """analysis.py looks for runs where utils.paths says they are."""
    import stages.analysis as analysis

    class Found(Exception):
        pass

    def fake_discover(root, *a, **k):
        raise Found(Path(root))

    monkeypatch.setattr(analysis, "discover_runs", fake_discover)
    from arg_parser import parse_args
    args = parse_args(["--ckpts", str(tmp_path)], prog="analysis.py")
    with pytest.raises(Found) as e:
        analysis.run(args)
    assert e.value.args[0] == paths.unlearn_root(tmp_path)
