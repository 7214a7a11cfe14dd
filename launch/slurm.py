"""SLURM rendering: ``#SBATCH`` directives, job-array and single-job scripts from the templates in
``scripts/slurm/`` (``{{NAME}}`` placeholders), and the submit script that chains jobs with
``--dependency=afterok``.

Time limits and preemption: every job is ``--requeue``-able and gets ``--signal=B:USR1@120``; the
templates trap USR1, stop the run (which keeps its last per-epoch checkpoint) and requeue the task.
A requeued task (``SLURM_RESTART_COUNT`` > 0, or ``SWEEP_RESUME=1`` in its environment) adds
``--resume`` to the commands that can continue a killed run (:func:`is_resumable`). The first
attempt does not: ``--resume`` is refused when another unfinished run of other settings lies
beside the run, which is common in a sweep.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from utils.errors import UserError
from utils.paths import REPO

TEMPLATES = REPO / "scripts" / "slurm"
ARRAY_TEMPLATE = TEMPLATES / "array.sbatch.tmpl"
MEMORIZATION_TEMPLATE = TEMPLATES / "memorization.sbatch.tmpl"


@dataclass
class SlurmOptions:
    workdir: Path
    log_dir: Path
    time: str = "04:00:00"
    cpus_per_task: int = 4
    memory: str = "16G"
    gpus: int = 1
    partition: str | None = None
    account: str | None = None
    max_parallel: int | None = None
    setup: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    requeue: bool = True  # --requeue, and USR1 signal_seconds before the time limit (the templates requeue)
    signal_seconds: int = 120


def _directive_value(value: Any, what: str) -> str:
    text = str(value)
    if not text or re.search(r"\s", text):
        raise UserError(f"{what} {text!r}: a #SBATCH value must be non-empty and hold no spaces")
    return text


def sbatch_directives(opts: SlurmOptions, job_name: str, array_size: int | None) -> str:
    """The ``#SBATCH`` lines of one job (an array of ``array_size`` tasks, or one task if None)."""
    if array_size is not None and array_size < 1:
        raise UserError("no commands to submit")
    lines = [f"--job-name={_directive_value(job_name, '--job_name')}"]
    log = _directive_value(opts.log_dir, "--log_dir")
    if array_size is not None:
        throttle = f"%{opts.max_parallel}" if opts.max_parallel else ""
        lines.append(f"--array=0-{array_size - 1}{throttle}")
        lines.append(f"--output={log}/%x_%A_%a.out")
    else:
        lines.append(f"--output={log}/%x_%j.out")
    lines.append(f"--time={_directive_value(opts.time, '--time')}")
    lines.append(f"--cpus-per-task={int(opts.cpus_per_task)}")
    lines.append(f"--mem={_directive_value(opts.memory, '--memory')}")
    if opts.gpus:
        lines.append(f"--gres=gpu:{int(opts.gpus)}")
    if opts.partition:
        lines.append(f"--partition={_directive_value(opts.partition, '--partition')}")
    if opts.account:
        lines.append(f"--account={_directive_value(opts.account, '--account')}")
    if opts.requeue:
        lines += ["--requeue", f"--signal=B:USR1@{int(opts.signal_seconds)}"]
    for e in opts.extra:
        e = _directive_value(e, "--sbatch_arg")
        if not e.startswith("-"):
            raise UserError(f"--sbatch_arg {e!r}: must be an sbatch option, e.g. --sbatch_arg=--qos=high")
        lines.append(e)
    return "\n".join(f"#SBATCH {line}" for line in lines)


def render_template(template: str, values: dict[str, str], source: str) -> str:
    """Replace ``{{NAME}}`` placeholders; every placeholder must be known and every value used."""
    missing = [k for k in values if "{{" + k + "}}" not in template and k in ("DIRECTIVES", "COMMANDS", "ARGV")]
    if missing:
        raise UserError(f"template {source}: no {{{{{missing[0]}}}}} placeholder")
    out = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values.get(m.group(1), m.group(0)), template)
    left = re.search(r"\{\{([A-Z_]+)\}\}", out)
    if left:
        raise UserError(f"template {source}: unknown placeholder {left.group(0)}; known: "
                        + ", ".join("{{" + k + "}}" for k in values))
    return out


def read_template(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--template {path}: no such file")
    return p.read_text()


def _common_values(opts: SlurmOptions, header: str) -> dict[str, str]:
    return {"HEADER": "\n".join(f"# {line}" if line else "#" for line in header.splitlines()),
            "WORKDIR": shlex.quote(str(opts.workdir)),
            "SETUP": "\n".join(opts.setup) if opts.setup else "# (no --setup lines)"}


def is_resumable(args: Sequence[str]) -> bool:
    """Whether a command (the script and its arguments) can continue a killed run with ``--resume``:
    pretraining (``main_train.py``) and the retrain reference (``main_forget.py --unlearn retrain``)."""
    words = [str(a) for a in args]
    script = next((Path(w).name for w in words if w.endswith(".py")), None)
    if script == "main_train.py":
        return True
    if script != "main_forget.py":
        return False
    method = None  # argparse keeps the last --unlearn
    for k, w in enumerate(words):
        if w.startswith("--unlearn="):
            method = w.split("=", 1)[1]
        elif w == "--unlearn" and k + 1 < len(words):
            method = words[k + 1]
    return method is not None and method.lower() == "retrain"


def render_array_script(commands: Sequence[str], opts: SlurmOptions, job_name: str, header: str = "",
                        template: str | None = None, source: str = str(ARRAY_TEMPLATE),
                        resumable: Sequence[bool] | None = None) -> str:
    """A job-array script: task ``i`` runs ``commands[i]`` (shell command lines) from ``opts.workdir``;
    ``resumable[i]``: a requeued task ``i`` adds ``--resume`` (default: :func:`is_resumable` of the line)."""
    for c in commands:
        if "\n" in c or "\r" in c:
            raise UserError(f"command {c!r} spans several lines")
    if resumable is None:
        resumable = [is_resumable(shlex.split(c)) for c in commands]
    text = template if template is not None else ARRAY_TEMPLATE.read_text()
    values = {"DIRECTIVES": sbatch_directives(opts, job_name, len(commands)), "COUNT": str(len(commands)),
              "COMMANDS": "\n".join(commands), "RESUMABLE": " ".join("1" if r else "0" for r in resumable),
              **_common_values(opts, header)}
    return render_template(text, values, source)


def render_job_script(argv: str, opts: SlurmOptions, job_name: str, array_size: int | None, header: str = "",
                      template: str | None = None, source: str = str(MEMORIZATION_TEMPLATE)) -> str:
    """A script that runs one command line ``argv`` (shell words; may use ``$SLURM_ARRAY_TASK_ID``),
    as an array of ``array_size`` tasks or as a single job."""
    text = template if template is not None else MEMORIZATION_TEMPLATE.read_text()
    values = {"DIRECTIVES": sbatch_directives(opts, job_name, array_size), "ARGV": argv,
              **_common_values(opts, header)}
    return render_template(text, values, source)


@dataclass(frozen=True)
class Job:
    """A script to submit and a description; ``after``: the index of the job it waits for."""
    script: Path
    what: str
    after: int | None = None


def submit_lines(jobs: Sequence[Job]) -> list[str]:
    """The sbatch calls, in order; a dependent job waits for its predecessor to succeed (afterok:
    every task of an array must exit 0)."""
    out = []
    for k, j in enumerate(jobs, 1):
        dep = (f" --dependency=afterok:${{jid{j.after + 1}}} --kill-on-invalid-dep=yes"
               if j.after is not None else "")
        out.append(f"jid{k}=$(sbatch --parsable{dep} {shlex.quote(str(j.script))})")
    return out


def render_submit(jobs: Sequence[Job], log_dir: Path) -> str:
    """A bash script submitting ``jobs`` in order with their dependencies and printing the job ids."""
    lines = ["#!/bin/bash", "# Generated by scripts/sweep.py: submits the job(s) below in order; a job with",
             "# --dependency=afterok starts only when every task of the job it waits for exited 0.",
             "set -euo pipefail", f"mkdir -p {shlex.quote(str(log_dir))}"]
    for k, (j, call) in enumerate(zip(jobs, submit_lines(jobs)), 1):
        lines.append(call)
        lines.append(f"jid{k}=${{jid{k}%%;*}}")
        wait = f" (after job $jid{j.after + 1})" if j.after is not None else ""
        lines.append(f"echo \"submitted {j.what}: job $jid{k}{wait}\"")
    return "\n".join(lines) + "\n"


def output_paths(out: str | Path, n_stages: int) -> tuple[Path, list[Path], Path]:
    """``(base, [sbatch file per stage], submit script)`` for ``--slurm OUT``: one stage writes
    OUT itself; several write ``<base>.<k>.sbatch``."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix in (".sbatch", ".sh") else out
    scripts = [out] if n_stages == 1 else [base.with_name(f"{base.name}.{k}.sbatch") for k in range(1, n_stages + 1)]
    return base, scripts, base.with_name(base.name + ".submit.sh")
