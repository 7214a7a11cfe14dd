"""utils/wandb_log.py (optional W&B, with a fake ``wandb`` module) and utils/runlog.py (log.jsonl)."""
import json
import sys
import types

import pytest

from utils.runlog import EpochLog, read_rows
from utils.wandb_log import MISSING, WandbSettings, flatten, start


def test_asked():
    assert not WandbSettings().asked
    assert WandbSettings(project="p").asked and WandbSettings(mode="offline").asked
    assert WandbSettings(entity="e").asked and WandbSettings(run_id="r").asked
    assert not WandbSettings(mode="disabled", project="p").asked


def _fake(monkeypatch, init):
    mod = types.ModuleType("wandb")
    mod.init = init
    monkeypatch.setitem(sys.modules, "wandb", mod)


def test_start_passes_the_flags_and_never_raises(monkeypatch):
    seen, lines = {}, []

    class Run:
        summary = {}

        def log(self, row):
            raise ConnectionError("offline")

        def finish(self):
            seen["finished"] = True

    def init(**kw):
        seen.update(kw)
        return Run()

    _fake(monkeypatch, init)
    assert start(WandbSettings(), name="x", config={}, out=lines.append) is None and not seen  # not asked
    run = start(WandbSettings(project="p", run_id="abc", group="g"), name="n", config={"a": {"b": 1}, "c": [1]},
                group="default", out=lines.append)
    assert seen["project"] == "p" and seen["id"] == "abc" and seen["resume"] == "allow" and seen["group"] == "g"
    assert seen["mode"] == "online" and seen["name"] == "n" and seen["config"] == {"a/b": 1}
    run.log({"loss": 1.0})
    run.log({"loss": 2.0})
    assert sum("log failed" in line for line in lines) == 1  # one line, then logging is off
    run.finish({"x": 1})
    assert "finished" not in seen  # turned off after the failure

    def broken(**kw):
        raise RuntimeError("no network")

    _fake(monkeypatch, broken)
    lines.clear()
    assert start(WandbSettings(project="p"), name="n", config={}, out=lines.append) is None
    assert lines == ["wandb could not start (RuntimeError: no network); not logging"]


def test_missing_wandb_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    lines = []
    assert start(WandbSettings(project="p"), name="n", config={}, out=lines.append) is None
    assert lines == [MISSING] and MISSING == "wandb is not installed; not logging (pip install wandb)"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": None}, "d": "x", "e": [1], "f": True}, "p/") == {"p/a/b": 1, "p/d": "x",
                                                                                          "p/f": True}


def test_epoch_log_rewrites_the_file_and_mirrors(tmp_path):
    logged = []

    class Mirror:
        def log(self, row, prefix=""):
            logged.append((prefix, dict(row)))

    log = EpochLog(tmp_path / "log.jsonl", mirror=Mirror(), prefix="step1/")
    log({"epoch": 1, "loss": 0.5})
    log({"epoch": 2, "loss": 0.25})
    assert read_rows(tmp_path / "log.jsonl") == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert logged == [("step1/", {"epoch": 1, "loss": 0.5}), ("step1/", {"epoch": 2, "loss": 0.25})]
    assert read_rows(tmp_path / "none.jsonl") == [] and not list(tmp_path.glob("*.tmp*"))
