"""launch/local.py: the local process pool (parallelism, logs, GPUs, failures, chained stages)."""
from __future__ import annotations

import os
import shlex
import sys

from launch.local import run_local, summarize
from launch.spec import Command

PY = sys.executable


# --- local runs ---------------------------------------------------------------------------------

def py_command(stage_no: int, name: str, index: int, code: str, *args: str) -> Command:
    return Command(stage_no, name, index, ("-c", code, *args))


SPAN = ("import os, sys, time; t0 = time.time(); time.sleep(0.4); "
        "open(sys.argv[1], 'a').write(f'{t0} {time.time()}\\n'); "
        "print('gpu', os.environ.get('CUDA_VISIBLE_DEVICES')); sys.exit(int(sys.argv[2]))")


def test_run_local_parallel_logs_failures(tmp_path):
    spans = tmp_path / "spans.txt"
    cmds = [py_command(1, "s", i, SPAN, str(spans), "3" if i == 2 else "0") for i in range(5)]
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        results = run_local([cmds], jobs=2, python=PY, cwd=tmp_path, log_dir=tmp_path / "logs", gpus=["0", "1"],
                            out=fh)
    assert [r.command.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.returncode for r in results] == [0, 0, 3, 0, 0]
    # at most two at a time, and two did run together
    events = sorted([(float(a), 1) for a, b in (l.split() for l in spans.read_text().splitlines())]
                    + [(float(b), -1) for a, b in (l.split() for l in spans.read_text().splitlines())])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak == 2
    for r in results:
        text = r.log.read_text()
        assert r.log == tmp_path / "logs" / "s" / f"{r.command.index:04d}.log"
        assert text.startswith(f"# {shlex.join([PY, *r.command.args])}\n")
        assert "gpu 0" in text or "gpu 1" in text
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and sum("FAILED (exit 3)" in l for l in lines) == 1
    with open(out, "w") as fh:
        assert summarize(results, fh) == 1
    assert "5 commands: 4 ok, 1 failed" in out.read_text() and str(results[2].log) in out.read_text()


def test_run_local_chain_skips_after_a_failure(tmp_path):
    ok = "import sys; sys.exit(0)"
    first = [py_command(1, "a", 0, ok), py_command(1, "a", 1, "import sys; sys.exit(1)")]
    second = [py_command(2, "b", 0, ok)]
    with open(os.devnull, "w") as null:
        chained = run_local([first, second], jobs=2, python=PY, cwd=tmp_path, log_dir=tmp_path / "l", chain=True,
                            out=null)
        assert [r.returncode for r in chained] == [0, 1, None]
        assert summarize(chained, null) == 1
        pooled = run_local([first, second], jobs=3, python=PY, cwd=tmp_path, log_dir=tmp_path / "l", out=null)
        assert [r.returncode for r in pooled] == [0, 1, 0]
        fine = run_local([first[:1], second], jobs=1, python=PY, cwd=tmp_path, log_dir=tmp_path / "l", chain=True,
                         out=null)
        assert summarize(fine, null) == 0
