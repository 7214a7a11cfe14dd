"""The local process pool: run sweep commands here, at most N at a time, a log file per command,
optionally stage by stage and spread over GPUs; progress lines and the closing summary.

A command whose stage found its result already there (it prints "<where> already holds ...;
nothing to do", :data:`ALREADY_DONE`, and exits 0) counts as done, and the summary says how many were.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TextIO

from launch.spec import Command

# What a stage prints when its result is already there: a finished run (stages.common.finished_run),
# the memorization scores, the mask files.
ALREADY_DONE = re.compile(rb"already holds [^\n]*; nothing to do")


@dataclass
class Result:
    command: Command
    log: Path
    returncode: int | None = None  # None: not run (an earlier stage failed)
    seconds: float = 0.0
    already: bool = False  # exit 0 without work: the run was already finished

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def log_path(log_dir: Path, c: Command) -> Path:
    return Path(log_dir) / c.stage_name / f"{c.index:04d}.log"


@dataclass
class _Running:
    """A started command: its process, result, start time, open log file and GPU (or None)."""
    proc: subprocess.Popen
    result: Result
    t0: float
    log: TextIO
    gpu: str | None


class _Pool:
    """The state of one :func:`run_local` call: how busy each GPU is, the progress count, the results."""

    def __init__(self, *, python: str, cwd: Path, log_dir: Path, env: dict[str, str], gpus: Sequence[str] | None,
                 out: TextIO, shown: str, total: int) -> None:
        self.python, self.cwd, self.log_dir, self.env = python, cwd, log_dir, env
        self.out, self.shown, self.total = out, shown, total
        self.busy = {g: 0 for g in (gpus or [])}
        self.done = 0
        self.results: list[Result] = []

    def _finished(self, res: Result, gpu: str | None) -> None:
        if gpu is not None:
            self.busy[gpu] -= 1
        self.results.append(res)
        self.done += 1
        _report(self.out, self.done, self.total, res, self.shown)

    def _start(self, c: Command) -> _Running | None:
        """Start ``c`` with its log open (on the least busy GPU, if any); None if it could not start."""
        res = Result(c, log_path(self.log_dir, c))
        res.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(res.log, "w")
        fh.write(f"# {c.text(self.python)}\n# cwd: {self.cwd}\n")
        child_env = dict(self.env)
        gpu = min(self.busy, key=lambda g: self.busy[g]) if self.busy else None
        if gpu is not None:
            self.busy[gpu] += 1
            child_env["CUDA_VISIBLE_DEVICES"] = gpu
            fh.write(f"# CUDA_VISIBLE_DEVICES={gpu}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(c.argv(self.python), cwd=self.cwd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=child_env)
        except OSError as e:
            fh.write(f"cannot start: {e}\n")
            fh.close()
            res.returncode = 127
            self._finished(res, gpu)
            return None
        return _Running(proc, res, time.perf_counter(), fh, gpu)

    def _reap(self, running: list[_Running]) -> list[_Running]:
        """Record the commands that have exited; the ones still running."""
        still = []
        for r in running:
            rc = r.proc.poll()
            if rc is None:
                still.append(r)
                continue
            r.log.close()
            r.result.returncode, r.result.seconds = rc, time.perf_counter() - r.t0
            r.result.already = rc == 0 and was_already_done(r.result.log)
            self._finished(r.result, r.gpu)
        return still

    def run_wave(self, wave: Sequence[Command], jobs: int, poll: float) -> None:
        """Run ``wave`` with at most ``jobs`` at a time; on any exception stop the running ones."""
        queue = list(wave)
        running: list[_Running] = []
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    started = self._start(queue.pop(0))
                    if started is not None:
                        running.append(started)
                still = self._reap(running)
                if len(still) == len(running) and running:
                    time.sleep(poll)
                running = still
        except BaseException:
            _stop(running)
            raise


def _stop(running: Sequence[_Running]) -> None:
    """Terminate the running commands (kill those that do not exit within 10 s) and close their logs."""
    for r in running:
        r.proc.terminate()
    for r in running:
        try:
            r.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        r.log.close()


def run_local(groups: Sequence[Sequence[Command]], *, jobs: int, python: str, cwd: Path, log_dir: Path,
              chain: bool = False, gpus: Sequence[str] | None = None, env: dict[str, str] | None = None,
              out: TextIO | None = None, shown: str = "python", poll: float = 0.05) -> list[Result]:
    """Run the commands with at most ``jobs`` at a time, each from ``cwd`` with its output in
    ``log_path(log_dir, command)``. With ``chain`` the groups run one after another and a failed
    group skips the later ones (as SLURM's afterok would); otherwise all commands share one queue.
    ``gpus``: device ids handed out through CUDA_VISIBLE_DEVICES, each command getting the least busy.
    ``python`` runs the scripts (may be several words); progress lines show ``shown`` in its place."""
    out = out or sys.stdout
    jobs = max(1, int(jobs))
    waves = [list(g) for g in groups] if chain else [[c for g in groups for c in g]]
    pool = _Pool(python=python, cwd=cwd, log_dir=log_dir, env=dict(os.environ if env is None else env), gpus=gpus,
                 out=out, shown=shown, total=sum(len(w) for w in waves))
    for wave in waves:
        if chain and any(not r.ok for r in pool.results):
            pool.results += [Result(c, log_path(log_dir, c)) for c in wave]
            continue
        pool.run_wave(wave, jobs, poll)
    order = {(r.command.stage, r.command.index): r for r in pool.results}
    return [order[(c.stage, c.index)] for w in waves for c in w]


def was_already_done(log: Path) -> bool:
    """Whether the command's log says its run was already finished (:data:`ALREADY_DONE`)."""
    try:
        with open(log, "rb") as fh:
            return ALREADY_DONE.search(fh.read(1 << 20)) is not None  # said before any work: near the start
    except OSError:
        return False


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _report(out: TextIO, done: int, total: int, r: Result, shown: str) -> None:
    width = len(str(total))
    status = ("already done" if r.already else "ok") if r.ok else f"FAILED (exit {r.returncode})"
    tail = "" if r.ok else f"  log: {r.log}"
    out.write(f"[{done:>{width}}/{total}] {status} {r.seconds:.1f}s  {r.command.text(shown)}{tail}\n")
    out.flush()


def summarize(results: Sequence[Result], out: TextIO | None = None, shown: str = "python") -> int:
    """Print the summary; 0 if every command ran and succeeded, else 1."""
    out = out or sys.stdout
    failed = [r for r in results if r.returncode not in (0, None)]
    skipped = [r for r in results if r.returncode is None]
    ok = len(results) - len(failed) - len(skipped)
    already = sum(r.already for r in results)
    out.write(f"{plural(len(results), 'command')}: {ok} ok" + (f" ({already} already done)" if already else "")
              + f", {len(failed)} failed"
              + (f", {len(skipped)} not run (an earlier stage failed)" if skipped else "") + "\n")
    for r in failed:
        out.write(f"  FAILED (exit {r.returncode}): {r.command.text(shown)}\n    log: {r.log}\n")
    out.flush()
    return 1 if failed or skipped else 0
