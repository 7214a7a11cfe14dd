"""Sweeps: a grid of runs -> the list of commands -> local runs or a SLURM job array (DESIGN.md §9).

A *stage* is one entry script and a grid of its flags::

    {"script": "main_forget.py",
     "fixed": {"dataset": "digits", "arch": "cnn_s", "num_indexes_to_replace": 60},
     "grid": {"unlearn": ["FT", "GA", "NG"], "mem": ["low", "high"], "seed": [1, 2, 3]},
     "per_method": {"NG": {"alpha": [0.99, 0.97]}},
     "flags": ["no_aug"],
     "name": "methods"}

A spec is one stage or a list of stages (run in the order written). Expansion order, which is also
the order of the command list, the local queue and the array task ids:

- the grid axes are nested loops in the order written: the first axis varies slowest, the last
  fastest (``itertools.product``);
- for a combination whose ``unlearn`` value has ``per_method`` axes, those axes are further inner
  loops, in the order written (method names match case-insensitively, as ``--unlearn`` does);
- a command's arguments are: the fixed flags, the grid axes, the per-method axes (each in the order
  written), then the boolean ``flags``.

Keys are the parser's flag names without dashes (``seed``, ``no-l1-epochs`` or its dest
``no_l1_epochs``), checked against :func:`arg_parser.build_parser` so a typo is refused before
anything runs. Values: a string or number is one argument; ``true``/``false`` turn a boolean flag
on/off (so ``"no_aug": [true, false]`` is an axis); ``null`` leaves the flag out; a list is one value
of a flag that takes several (``"separate": ["max", "min"]`` -> ``--separate max min``) or of a
comma-list flag (``"decreasing_lr": [91, 136]`` -> ``--decreasing_lr 91,136``). Inside ``grid`` a
list is the axis, so a list-valued axis is a list of lists.

This module renders commands (``shlex``-quoted), job-array scripts from ``scripts/slurm/*.tmpl``
and the submit script, and runs commands locally (:func:`run_local`).
"""
from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "scripts" / "slurm"
ARRAY_TEMPLATE = TEMPLATES / "array.sbatch.tmpl"
MEMORIZATION_TEMPLATE = TEMPLATES / "memorization.sbatch.tmpl"

#: The entry scripts a stage may run (DESIGN.md §1); all use the one parser of arg_parser.py.
ENTRY_SCRIPTS = ("main_train.py", "main_memorization.py", "main_forget.py", "generate_mask.py", "main_random.py",
                 "main_rum.py", "main_rum_proxy.py", "analysis.py", "analysis_mia.py", "imagenet_mem_subset.py")
STAGE_KEYS = ("script", "fixed", "grid", "per_method", "flags", "name")


# --------------------------------------------------------------------------------------------
# The toolkit's flags
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    dest: str
    option: str  # the long option string, e.g. "--no-l1-epochs"
    boolean: bool  # store_true: takes no value
    multi: bool  # takes several arguments (nargs=N / "+" / "*")


_FLAGS: dict[str, Flag] | None = None


def toolkit_flags() -> dict[str, Flag]:
    """``{name: Flag}`` for every flag of the shared parser, by dest and by option name without dashes."""
    global _FLAGS
    if _FLAGS is None:
        from arg_parser import build_parser

        table: dict[str, Flag] = {}
        for a in build_parser()._actions:
            longs = [s for s in a.option_strings if s.startswith("--")]
            if not longs or a.dest == "help":
                continue
            boolean = a.nargs == 0 and a.const is True
            multi = a.nargs not in (None, "?", 0)
            flag = Flag(a.dest, longs[0], boolean, multi)
            table[a.dest] = flag
            for s in longs:
                table.setdefault(s[2:], flag)
        _FLAGS = table
    return _FLAGS


def lookup_flag(name: Any, where: str) -> Flag:
    """The flag called ``name`` (dest or option name, leading dashes optional) or a UserError."""
    table = toolkit_flags()
    key = str(name).lstrip("-")
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, sorted(table), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; names are the flags of arg_parser.py without dashes"
    raise UserError(f"{where}: unknown flag {name!r}{hint}")


# --------------------------------------------------------------------------------------------
# Specs and stages
# --------------------------------------------------------------------------------------------

@dataclass
class Stage:
    script: str
    grid: dict[str, list] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    per_method: dict[str, dict[str, list]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    name: str | None = None


def canonical_script(script: Any, where: str) -> str:
    text = str(script).strip()
    if text.startswith("./"):
        text = text[2:]
    if text and not text.endswith(".py"):
        text += ".py"
    if text not in ENTRY_SCRIPTS:
        raise UserError(f"{where}: unknown script {script!r}; accepted: {', '.join(ENTRY_SCRIPTS)}")
    return text


def _check_value(value: Any, where: str, in_list: bool = False) -> None:
    if isinstance(value, list) and not in_list:
        for v in value:
            _check_value(v, where, in_list=True)
        return
    if not (value is None or isinstance(value, (str, int, float, bool))):
        raise UserError(f"{where}: value {value!r} is not a string, number, boolean, null or a list of them")
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise UserError(f"{where}: value {value!r} contains a line break")


def stage_from_obj(obj: Any, where: str) -> Stage:
    """Build and check one stage from its JSON object."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: a stage must be a JSON object with \"script\" and \"grid\", "
                        f"got {type(obj).__name__}")
    extra = [k for k in obj if k not in STAGE_KEYS]
    if extra:
        raise UserError(f"{where}: unknown key {extra[0]!r}; accepted: {', '.join(STAGE_KEYS)}")
    if "script" not in obj:
        raise UserError(f"{where}: no \"script\"; accepted: {', '.join(ENTRY_SCRIPTS)}")
    for key, kind in (("fixed", dict), ("grid", dict), ("per_method", dict), ("flags", list)):
        if key in obj and not isinstance(obj[key], kind):
            raise UserError(f"{where}: \"{key}\" must be a JSON {'object' if kind is dict else 'list'}")
    stage = Stage(script=obj["script"], grid=dict(obj.get("grid", {})), fixed=dict(obj.get("fixed", {})),
                  per_method={m: dict(a) if isinstance(a, dict) else a for m, a in obj.get("per_method", {}).items()},
                  flags=list(obj.get("flags", [])), name=obj.get("name"))
    return check_stage(stage, where)


def check_stage(stage: Stage, where: str) -> Stage:
    """Canonical names, no flag twice, no empty axis, values of the right kind; returns the stage."""
    script = canonical_script(stage.script, where)
    label = None if stage.name is None else str(stage.name)
    if label is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
        raise UserError(f"{where}: \"name\" {label!r} may hold only letters, digits, '_', '-', '.'")
    seen: dict[str, str] = {}

    def claim(name: Any, part: str) -> Flag:
        flag = lookup_flag(name, f"{where} {part}")
        if flag.dest in seen and not (part.startswith("per_method") and seen[flag.dest].startswith("per_method")):
            raise UserError(f"{where}: flag {name!r} appears in both {seen[flag.dest]} and {part}")
        seen[flag.dest] = part
        return flag

    def value_kind(flag: Flag, value: Any, part: str) -> None:
        _check_value(value, f"{where} {part} {flag.dest}")
        if flag.boolean and not (value is None or isinstance(value, bool)):
            raise UserError(f"{where} {part}: {flag.option} takes no value; use true/false or list it in \"flags\"")
        if not flag.boolean and isinstance(value, bool):
            raise UserError(f"{where} {part}: {flag.option} takes a value, not {json.dumps(value)}")

    fixed: dict[str, Any] = {}
    for name, value in stage.fixed.items():
        flag = claim(name, "fixed")
        value_kind(flag, value, "fixed")
        fixed[flag.dest] = value
    if not stage.grid:
        raise UserError(f"{where}: empty grid; give at least one axis, e.g. \"grid\": {{\"seed\": [1, 2, 3]}}")
    grid: dict[str, list] = {}
    for name, values in stage.grid.items():
        flag = claim(name, "grid")
        grid[flag.dest] = _axis(flag, values, "grid", where, value_kind)
    flags: list[str] = []
    for name in stage.flags:
        flag = claim(name, "flags")
        if not flag.boolean:
            raise UserError(f"{where} flags: {flag.option} takes a value; put it in \"fixed\" or \"grid\"")
        flags.append(flag.dest)
    per_method: dict[str, dict[str, list]] = {}
    if stage.per_method:
        methods = grid.get("unlearn", [fixed.get("unlearn")] if "unlearn" in fixed else [])
        by_lower = {str(m).lower(): m for m in methods if m is not None}
        for method, axes in stage.per_method.items():
            if str(method).lower() not in by_lower:
                raise UserError(f"{where} per_method: method {method!r} is not among the --unlearn values "
                                f"({', '.join(map(str, by_lower.values())) or 'none given'})")
            if not isinstance(axes, dict) or not axes:
                raise UserError(f"{where} per_method {method}: must be a non-empty object of axes")
            own: dict[str, list] = {}
            for name, values in axes.items():
                flag = claim(name, f"per_method {method}")
                if flag.dest in own:
                    raise UserError(f"{where} per_method {method}: flag {name!r} given twice")
                own[flag.dest] = _axis(flag, values, f"per_method {method}", where, value_kind)
            per_method[str(method).lower()] = own
    return Stage(script=script, grid=grid, fixed=fixed, per_method=per_method, flags=flags, name=label)


def _axis(flag: Flag, values: Any, part: str, where: str, value_kind) -> list:
    if not isinstance(values, list):
        raise UserError(f"{where} {part}: axis {flag.dest!r} must be a list of values, got {json.dumps(values)}")
    if not values:
        raise UserError(f"{where} {part}: axis {flag.dest!r} has no values (the grid would be empty)")
    for v in values:
        value_kind(flag, v, part)
    return list(values)


def load_spec(path: str | Path) -> list[Stage]:
    """Read a spec file: one stage object or a list of them."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such spec file")
    try:
        obj = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    return stages_from_obj(obj, str(path))


def stages_from_obj(obj: Any, source: str) -> list[Stage]:
    if isinstance(obj, dict):
        return [stage_from_obj(obj, source)]
    if isinstance(obj, list):
        if not obj:
            raise UserError(f"{source}: the list of stages is empty")
        return [stage_from_obj(o, f"{source} stage {k}") for k, o in enumerate(obj, 1)]
    raise UserError(f"{source}: the spec must be a stage object or a list of them, got {type(obj).__name__}")


def stage_names(stages: Sequence[Stage]) -> list[str]:
    """A distinct name per stage: its ``name`` or ``<k>-<script stem>``."""
    names = [s.name or (Path(s.script).stem if len(stages) == 1 else f"{k}-{Path(s.script).stem}")
             for k, s in enumerate(stages, 1)]
    for k, n in enumerate(names):
        if names.count(n) > 1:
            names[k] = f"{k + 1}-{n}"
    return names


# --------------------------------------------------------------------------------------------
# Expansion and rendering
# --------------------------------------------------------------------------------------------

def expand(stage: Stage) -> list[dict[str, Any]]:
    """The stage's runs, in the documented order, as ``{dest: value}`` (fixed, grid, per-method)."""
    axes = list(stage.grid)
    runs = []
    for combo in itertools.product(*(stage.grid[a] for a in axes)):
        point = dict(zip(axes, combo))
        method = point.get("unlearn", stage.fixed.get("unlearn"))
        extra = stage.per_method.get(str(method).lower(), {}) if method is not None else {}
        for inner in itertools.product(*extra.values()):
            runs.append({**stage.fixed, **point, **dict(zip(extra, inner))})
    return runs


def render_args(point: dict[str, Any], flags: Iterable[str] = ()) -> list[str]:
    """``{dest: value}`` + boolean flags -> argument list (no quoting: a list of argv strings)."""
    table = toolkit_flags()
    out: list[str] = []
    for dest, value in point.items():
        flag = table[dest]
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag.option)
        elif isinstance(value, list):
            out.append(flag.option)
            if flag.multi:
                out.extend(str(v) for v in value)
            else:
                out.append(",".join(str(v) for v in value))
        else:
            out += [flag.option, str(value)]
    for dest in flags:
        out.append(table[dest].option)
    return out


@dataclass(frozen=True)
class Command:
    """One run: the script and its arguments (the interpreter is added when run or rendered)."""
    stage: int  # 1-based
    stage_name: str
    index: int  # 0-based within the stage: the array task id
    args: tuple[str, ...]

    def argv(self, python: str = "python") -> list[str]:
        """``python`` may be several words (``"torchrun --nproc_per_node=4"``, ``"uv run python"``)."""
        return [*shlex.split(python), *self.args]

    def text(self, python: str = "python") -> str:
        return shlex.join(self.argv(python))


def stage_commands(stages: Sequence[Stage]) -> list[list[Command]]:
    """The commands of every stage, in order."""
    names = stage_names(stages)
    return [[Command(k, names[k - 1], i, (s.script, *render_args(p, s.flags))) for i, p in enumerate(expand(s))]
            for k, s in enumerate(stages, 1)]


def raising_parser():
    """The shared parser, but a bad value raises UserError instead of exiting."""
    from arg_parser import build_parser

    parser = build_parser()

    def error(message: str) -> None:
        raise UserError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser


def parse_toolkit_args(args: Sequence[str], parser=None):
    """Parse and validate ``args`` as an entry script would (UserError on a bad value)."""
    from arg_parser import validate_common

    ns = (parser or raising_parser()).parse_args(list(args))
    validate_common(ns)
    return ns


def check_commands(groups: Sequence[Sequence[Command]]) -> None:
    """Parse every command's arguments with the shared parser, so a bad value (``--mem hgih``,
    ``--unlearn FTT``, ``--seed x``) is refused before anything is run or submitted."""
    seen: set[tuple[str, ...]] = set()
    parser = raising_parser()
    for group in groups:
        for c in group:
            if c.args[1:] in seen:
                continue
            seen.add(c.args[1:])
            try:
                parse_toolkit_args(c.args[1:], parser)
            except UserError as e:
                raise UserError(f"stage {c.stage_name} command {c.index + 1} ({c.text()}): {e}") from None


# --------------------------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------------------------

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


def render_array_script(commands: Sequence[str], opts: SlurmOptions, job_name: str, header: str = "",
                        template: str | None = None, source: str = str(ARRAY_TEMPLATE)) -> str:
    """A job-array script: task ``i`` runs ``commands[i]`` (shell command lines) from ``opts.workdir``."""
    for c in commands:
        if "\n" in c or "\r" in c:
            raise UserError(f"command {c!r} spans several lines")
    text = template if template is not None else ARRAY_TEMPLATE.read_text()
    values = {"DIRECTIVES": sbatch_directives(opts, job_name, len(commands)), "COUNT": str(len(commands)),
              "COMMANDS": "\n".join(commands), **_common_values(opts, header)}
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


# --------------------------------------------------------------------------------------------
# Local runs
# --------------------------------------------------------------------------------------------

@dataclass
class Result:
    command: Command
    log: Path
    returncode: int | None = None  # None: not run (an earlier stage failed)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def log_path(log_dir: Path, c: Command) -> Path:
    return Path(log_dir) / c.stage_name / f"{c.index:04d}.log"


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
    base_env = dict(os.environ if env is None else env)
    waves = [list(g) for g in groups] if chain else [[c for g in groups for c in g]]
    total = sum(len(w) for w in waves)
    results: list[Result] = []
    done = 0
    busy = {g: 0 for g in (gpus or [])}
    for w, wave in enumerate(waves):
        if chain and any(not r.ok for r in results):
            results += [Result(c, log_path(log_dir, c)) for c in wave]
            continue
        queue = list(wave)
        running: list[tuple[subprocess.Popen, Result, float, Any, str | None]] = []
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    c = queue.pop(0)
                    res = Result(c, log_path(log_dir, c))
                    res.log.parent.mkdir(parents=True, exist_ok=True)
                    fh = open(res.log, "w")
                    fh.write(f"# {c.text(python)}\n# cwd: {cwd}\n")
                    child_env = dict(base_env)
                    gpu = min(busy, key=lambda g: busy[g]) if busy else None
                    if gpu is not None:
                        busy[gpu] += 1
                        child_env["CUDA_VISIBLE_DEVICES"] = gpu
                        fh.write(f"# CUDA_VISIBLE_DEVICES={gpu}\n")
                    fh.flush()
                    try:
                        proc = subprocess.Popen(c.argv(python), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=child_env)
                    except OSError as e:
                        fh.write(f"cannot start: {e}\n")
                        fh.close()
                        if gpu is not None:
                            busy[gpu] -= 1
                        res.returncode = 127
                        results.append(res)
                        done += 1
                        _report(out, done, total, res, shown)
                        continue
                    running.append((proc, res, time.perf_counter(), fh, gpu))
                still = []
                for proc, res, t0, fh, gpu in running:
                    rc = proc.poll()
                    if rc is None:
                        still.append((proc, res, t0, fh, gpu))
                        continue
                    fh.close()
                    if gpu is not None:
                        busy[gpu] -= 1
                    res.returncode, res.seconds = rc, time.perf_counter() - t0
                    results.append(res)
                    done += 1
                    _report(out, done, total, res, shown)
                if len(still) == len(running) and running:
                    time.sleep(poll)
                running = still
        except BaseException:
            for proc, _, _, fh, _ in running:
                proc.terminate()
            for proc, _, _, fh, _ in running:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                fh.close()
            raise
    order = {(r.command.stage, r.command.index): r for r in results}
    return [order[(c.stage, c.index)] for w in waves for c in w]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _report(out: TextIO, done: int, total: int, r: Result, shown: str) -> None:
    width = len(str(total))
    status = "ok" if r.ok else f"FAILED (exit {r.returncode})"
    tail = "" if r.ok else f"  log: {r.log}"
    out.write(f"[{done:>{width}}/{total}] {status} {r.seconds:.1f}s  {r.command.text(shown)}{tail}\n")
    out.flush()


def summarize(results: Sequence[Result], out: TextIO | None = None, shown: str = "python") -> int:
    """Print the summary; 0 if every command ran and succeeded, else 1."""
    out = out or sys.stdout
    failed = [r for r in results if r.returncode not in (0, None)]
    skipped = [r for r in results if r.returncode is None]
    ok = len(results) - len(failed) - len(skipped)
    out.write(f"{plural(len(results), 'command')}: {ok} ok, {len(failed)} failed"
              + (f", {len(skipped)} not run (an earlier stage failed)" if skipped else "") + "\n")
    for r in failed:
        out.write(f"  FAILED (exit {r.returncode}): {r.command.text(shown)}\n    log: {r.log}\n")
    out.flush()
    return 1 if failed or skipped else 0
