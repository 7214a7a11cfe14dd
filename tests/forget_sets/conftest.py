"""Fixtures of the forget-set tests: the digits data and a working directory with a score file."""
import numpy as np
import pytest

from utils.data import load_data


@pytest.fixture(scope="module")
def data():
    return load_data("digits")


@pytest.fixture
def env(tmp_path, monkeypatch, data):
    """A working directory with ckpts/memorization/digits_memorization.npz (random scores)."""
    monkeypatch.chdir(tmp_path)
    scores = np.random.RandomState(0).rand(len(data.x))
    (tmp_path / "ckpts" / "memorization").mkdir(parents=True)
    np.savez(tmp_path / "ckpts" / "memorization" / "digits_memorization.npz", memorization=scores)
    return tmp_path, scores
