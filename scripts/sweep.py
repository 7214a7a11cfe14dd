"""Sweeps: expand a grid of runs into commands; print them, run them locally, or write a SLURM job array.

    python scripts/sweep.py grid.json --dry-run                   # the commands, one per line, and their count
    python scripts/sweep.py grid.json --jobs 4                    # run them here, at most 4 at a time
    python scripts/sweep.py grid.json --slurm sweep.sbatch [--submit] [--gpus_per_task 1 --partition P ...]
    python scripts/sweep.py --script main_forget.py --set dataset digits --grid unlearn FT GA \\
        --grid seed 1 2 3 --dry-run
    python scripts/sweep.py --memorization --dataset digits --arch mlp --num_models 128 --num_shards 4 \\
        --epochs 20 --lr 0.1 --batch_size 64 --slurm mem.sbatch   # shards array + dependent merge

A spec file holds one stage ({"script", "fixed", "grid", "per_method", "flags", "name"}) or a list
of stages; the expansion order is documented in launch/spec.py and docs/stage_sweep.md. Every
flag name and value is checked with the toolkit's parser before anything runs; a bad one exits 2
with one line. Local runs write a log per command under --log_dir and exit 1 if any command failed.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arg_parser import OneLineParser, validate_common  # noqa: E402
from launch.local import plural, run_local, summarize  # noqa: E402
from launch.slurm import (ARRAY_TEMPLATE, MEMORIZATION_TEMPLATE, Job, SlurmOptions, is_resumable,  # noqa: E402
                          output_paths, read_template, render_array_script, render_job_script, render_submit,
                          submit_lines)
from launch.spec import (Command, Stage, check_commands, check_stage, load_spec, raising_parser,  # noqa: E402
                         stage_commands)
from utils.cli import run_main  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.rundir import check_writable  # noqa: E402
from utils.paths import REPO  # noqa: E402

MAX_ARRAY_HINT = 1000  # SLURM's default MaxArraySize is 1001: task ids 0..1000


def build_parser(memorization: bool) -> OneLineParser:
    p = OneLineParser(prog="sweep.py",
                      description="Expand a grid of runs; print, run locally, or write a SLURM job array.")
    if not memorization:
        p.add_argument("spec", nargs="?", default=None, help="JSON spec: a stage object or a list of stages")
    g = p.add_argument_group("the grid from the command line (or added to every stage of the spec)")
    g.add_argument("--script", default=None, help="entry script of the single stage (instead of a spec file)")
    g.add_argument("--set", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a fixed flag: --set dataset digits (several values: a flag taking several)")
    g.add_argument("--grid", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                   help="an axis: --grid seed 1 2 3")
    g.add_argument("--flag", action="append", default=[], metavar="NAME", help="a boolean flag: --flag no_aug")
    g.add_argument("--memorization", action="store_true",
                   help="memorization shards + merge; the other unrecognized flags go to main_memorization.py")

    g = p.add_argument_group("what to do")
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the commands (and, with --slurm, the sbatch calls); run and write nothing")
    g.add_argument("--jobs", type=int, default=None, help="run locally, at most N commands at a time")
    g.add_argument("--slurm", default=None, metavar="OUT.sbatch", help="write a SLURM job-array script")
    g.add_argument("--submit", action="store_true", help="with --slurm: submit with sbatch")
    g.add_argument("--chain", action="store_true",
                   help="stage k+1 starts only after every command of stage k succeeded (locally and on SLURM)")
    g.add_argument("--log_dir", default="sweep_logs", help="logs: a file per command / array task")
    g.add_argument("--workdir", default=str(REPO), help="where the commands run (default: the repository root)")
    g.add_argument("--python", default=None,
                   help="what runs the script (default: 'python' in scripts, this interpreter locally); may be "
                        "several words, e.g. 'torchrun --nproc_per_node=4'")
    g.add_argument("--local_gpus", default=None, metavar="IDS",
                   help="with --jobs: GPUs to spread the commands over (CUDA_VISIBLE_DEVICES), e.g. 0,1")

    g = p.add_argument_group("SLURM resources (per array task)")
    g.add_argument("--job_name", default=None, help="job name (default: the spec file's name, or 'sweep')")
    g.add_argument("--time", default="04:00:00", help="time limit per task")
    g.add_argument("--cpus_per_task", type=int, default=4)
    g.add_argument("--memory", default="16G", help="memory per task (sbatch --mem)")
    g.add_argument("--gpus_per_task", type=int, default=1, help="GPUs per task (--gres=gpu:N; 0 for none)")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--max_parallel", type=int, default=None, help="at most this many tasks at once (--array=...%%N)")
    g.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="a shell line run before the command, e.g. --setup 'source .venv/bin/activate'")
    g.add_argument("--sbatch_arg", action="append", default=[], metavar="OPT",
                   help="another #SBATCH option, e.g. --sbatch_arg=--qos=high")
    g.add_argument("--template", default=None, help="a job template instead of scripts/slurm/*.sbatch.tmpl")
    g.add_argument("--no_requeue", action="store_true",
                   help="no --requeue and no USR1 before the time limit (by default a task near its limit is "
                        "stopped and requeued, and continues with --resume where the script can)")
    g.add_argument("--signal_seconds", type=int, default=120,
                   help="send USR1 (stop and requeue) this many seconds before the time limit (default 120)")
    return p


def check_options(a: argparse.Namespace) -> None:
    modes = [m for m, on in (("--dry-run", a.dry_run), ("--jobs", a.jobs is not None),
                              ("--slurm", a.slurm is not None)) if on]
    if not modes:
        raise UserError("nothing to do: pass --dry-run (list the commands), --jobs N (run them here) "
                        "or --slurm OUT.sbatch (write a job array)")
    if a.jobs is not None and a.slurm is not None:
        raise UserError("--jobs runs locally and --slurm writes a job array: choose one")
    if a.jobs is not None and a.jobs < 1:
        raise UserError(f"--jobs {a.jobs}: must be an integer >= 1")
    if a.submit and a.slurm is None:
        raise UserError("--submit needs --slurm OUT.sbatch")
    if a.slurm is not None and not a.dry_run:
        if Path(a.slurm).is_dir():
            raise UserError(f"--slurm {a.slurm}: a directory; name the script file to write (OUT.sbatch)")
        out = Path(a.slurm)
        check_writable(out.parent if out.exists() else out, "--slurm")
    if a.jobs is not None and not a.dry_run:
        check_writable(Path(a.log_dir), "--log_dir")
    for flag, value, low in (("--cpus_per_task", a.cpus_per_task, 1), ("--gpus_per_task", a.gpus_per_task, 0),
                             ("--max_parallel", a.max_parallel, 1), ("--signal_seconds", a.signal_seconds, 1)):
        if value is not None and value < low:
            raise UserError(f"{flag} {value}: must be an integer >= {low}")
    if a.local_gpus is not None and a.jobs is None:
        raise UserError("--local_gpus applies to local runs (--jobs N)")
    if not Path(a.workdir).is_dir():
        raise UserError(f"--workdir {a.workdir}: no such directory")


def cli_values(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else list(values)


def extend_stage(stage: Stage, a: argparse.Namespace) -> Stage:
    """Add the command line's --set/--grid/--flag to a stage (before it is checked)."""
    fixed, grid = dict(stage.fixed), dict(stage.grid)
    for name, *values in a.set:
        if not values:
            raise UserError(f"--set {name}: no value; for a boolean flag use --flag {name}")
        fixed[name] = cli_values(values)
    for name, *values in a.grid:
        if not values:
            raise UserError(f"--grid {name}: no values")
        grid[name] = list(values)
    return Stage(script=stage.script, grid=grid, fixed=fixed, per_method=stage.per_method,
                 flags=list(stage.flags) + list(a.flag), name=stage.name)


def spec_stages(a: argparse.Namespace) -> list[Stage]:
    if a.spec is not None and a.script is not None:
        raise UserError("give a spec file or --script, not both")
    if a.spec is None and a.script is None:
        raise UserError("no grid: give a spec file (grid.json) or --script S --grid NAME V1 V2 ...")
    cli = bool(a.set or a.grid or a.flag)
    if a.spec is not None:
        stages = load_spec(a.spec)
        if cli:
            stages = [check_stage(extend_stage(s, a), f"{a.spec} stage {k} with the command line's flags")
                      for k, s in enumerate(stages, 1)]
        return stages
    return [check_stage(extend_stage(Stage(script=a.script), a), "command line")]


def memorization_groups(a: argparse.Namespace, passthrough: list[str]) -> tuple[list[list[Command]], list[str]]:
    """Shard commands and the merge command, and the shard command line for the array template."""
    if a.spec is not None or a.script or a.set or a.grid or a.flag:
        raise UserError("--memorization builds its own commands: pass main_memorization.py's flags directly, "
                        "not a spec file or --script/--set/--grid/--flag")
    ns = raising_parser().parse_args(passthrough)
    for dest, given in (("shard", ns.shard is not None), ("merge", ns.merge), ("proxies", ns.proxies is not None)):
        if given:
            raise UserError(f"--memorization adds --shard and --merge itself; do not pass --{dest}")
    validate_common(ns)
    args = list(passthrough)
    if not any(t == "--num_shards" or t.startswith("--num_shards=") for t in args):
        args += ["--num_shards", str(ns.num_shards)]
    script = "main_memorization.py"
    shards = [Command(1, "shards", i, (script, *args, "--shard", str(i))) for i in range(ns.num_shards)]
    merge = [Command(2, "merge", 0, (script, *args, "--merge"))]
    return [shards, merge], args


def check_scripts(groups: list[list[Command]], workdir: Path) -> None:
    for script in dict.fromkeys(c.args[0] for g in groups for c in g):
        if not (workdir / script).is_file():
            raise UserError(f"script {script}: not found in {workdir} (--workdir is where the commands run)")


def print_commands(groups: list[list[Command]], python: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    total = sum(len(g) for g in groups)
    for g in groups:
        if len(groups) > 1:
            print(f"# stage {g[0].stage_name}: {plural(len(g), 'command')}", file=out)
        for c in g:
            print(c.text(python), file=out)
    per = ", ".join(f"{g[0].stage_name}: {len(g)}" for g in groups)
    print(f"# {plural(total, 'command')}" + (f" ({per})" if len(groups) > 1 else ""), file=out)


def slurm_options(a: argparse.Namespace, workdir: Path, log_dir: Path) -> SlurmOptions:
    return SlurmOptions(workdir=workdir, log_dir=log_dir, time=a.time, cpus_per_task=a.cpus_per_task,
                        memory=a.memory, gpus=a.gpus_per_task, partition=a.partition, account=a.account,
                        max_parallel=a.max_parallel, setup=list(a.setup), extra=list(a.sbatch_arg),
                        requeue=not a.no_requeue, signal_seconds=a.signal_seconds)


def write_slurm(a: argparse.Namespace, groups: list[list[Command]], python: str, workdir: Path, log_dir: Path,
                mem_args: list[str] | None, argv: list[str]) -> tuple[list[Job], Path, dict[Path, str]]:
    """Render the job scripts, command lists and submit script: ``(jobs, submit script, {path: text})``."""
    opts = slurm_options(a, workdir, log_dir)
    template = read_template(a.template) if a.template else None
    source = a.template or str(MEMORIZATION_TEMPLATE if mem_args is not None else ARRAY_TEMPLATE)
    name = a.job_name or ("memorization" if mem_args is not None else
                          Path(a.spec).stem if a.spec else "sweep")
    origin = "scripts/sweep.py " + shlex.join(argv)
    files: dict[Path, str] = {}
    if mem_args is not None:
        out = Path(a.slurm)
        base, _, submit = output_paths(out, 1)
        merge_path = base.with_name(base.name + ".merge.sbatch")
        words = shlex.join([*shlex.split(python), "main_memorization.py", *mem_args])
        n = len(groups[0])
        header = f"Generated by {origin}\nMemorization shards: {n} array tasks, then {merge_path.name} merges them."
        files[out] = render_job_script(f'{words} --shard "${{SLURM_ARRAY_TASK_ID:?not an array task}}"', opts,
                                       name, n, header, template, source)
        files[merge_path] = render_job_script(f"{words} --merge", opts, f"{name}-merge", None,
                                              f"Generated by {origin}\nMerge of the {n} memorization shards "
                                              f"({out.name}); submitted with --dependency=afterok on them.",
                                              template, source)
        files[base.with_name(base.name + ".commands")] = "\n".join(c.text(python) for g in groups for c in g) + "\n"
        jobs = [Job(out.resolve(), f"memorization shards ({plural(n, 'task')})"),
                Job(merge_path.resolve(), "memorization merge", after=0)]
    else:
        base, scripts, submit = output_paths(a.slurm, len(groups))
        jobs = []
        for k, (g, path) in enumerate(zip(groups, scripts)):
            stage_name = name if len(groups) == 1 else f"{name}-{g[0].stage_name}"
            lines = [c.text(python) for c in g]
            lst = path.with_suffix(".commands")
            header = (f"Generated by {origin}\nStage {g[0].stage_name}: {plural(len(g), 'command')} "
                      f"(also listed in {lst.name}).")
            files[path] = render_array_script(lines, opts, stage_name, header, template, source,
                                              resumable=[is_resumable(c.args) for c in g])
            files[lst] = "\n".join(lines) + "\n"
            jobs.append(Job(path.resolve(), f"stage {g[0].stage_name} ({plural(len(g), 'task')})",
                            after=k - 1 if a.chain and k > 0 else None))
    files[submit] = render_submit(jobs, log_dir)
    return jobs, submit, files


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    memorization = "--memorization" in argv
    parser = build_parser(memorization)
    a, rest = parser.parse_known_args(argv)
    if memorization:
        a.spec = None
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)} (toolkit flags go in the spec or in --set/--grid)")
    check_options(a)
    workdir = Path(a.workdir).resolve()
    log_dir = Path(a.log_dir).resolve()
    mem_args = None
    if memorization:
        groups, mem_args = memorization_groups(a, rest)
        chain = True
    else:
        groups = stage_commands(spec_stages(a))
        chain = a.chain
        check_commands(groups)
    check_scripts(groups, workdir)
    total = sum(len(g) for g in groups)

    if a.jobs is not None and not a.dry_run:
        python = a.python or shlex.quote(sys.executable)
        words = shlex.split(python)
        if not words or (shutil.which(words[0]) is None and not Path(words[0]).is_file()):
            raise UserError(f"--python {python!r}: not found")
        gpus = [g.strip() for g in a.local_gpus.split(",") if g.strip()] if a.local_gpus else None
        print(f"running {plural(total, 'command')} from {workdir}, at most {a.jobs} at a time"
              + (" (stage by stage)" if chain and len(groups) > 1 else "") + f"; logs under {log_dir}", flush=True)
        shown = a.python or "python"
        results = run_local(groups, jobs=a.jobs, python=python, cwd=workdir, log_dir=log_dir, chain=chain, gpus=gpus,
                            shown=shown)
        return summarize(results, shown=shown)

    python = a.python or "python"
    if a.slurm is None:
        print_commands(groups, python)
        return 0
    jobs, submit, files = write_slurm(a, groups, python, workdir, log_dir, mem_args, argv)
    big = [len(g) for g in (groups[:1] if memorization else groups) if len(g) > MAX_ARRAY_HINT + 1]
    if big:
        print(f"note: an array of {big[0]} tasks; SLURM's default MaxArraySize (1001) allows task ids up to "
              f"{MAX_ARRAY_HINT}: check `scontrol show config | grep MaxArraySize` or split the grid", file=sys.stderr)
    if a.dry_run:
        print_commands(groups, python)
        print(f"# would write {', '.join(str(p) for p in files)}")
        print(f"# {'--submit' if a.submit else f'bash {submit}'} would run:")
        for line in submit_lines(jobs):
            print(f"#   {line}")
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path == submit or path.suffix == ".sbatch":
            path.chmod(0o755)
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"{plural(total, 'command')} in {plural(len(jobs), 'job')}; wrote:")
    for path in files:
        print(f"  {path}")
    if not a.submit:
        print(f"submit with: bash {submit}")
        return 0
    if shutil.which("sbatch") is None:
        raise UserError(f"--submit: sbatch not found on PATH (not a SLURM login node?); the scripts are written, "
                        f"submit them later with: bash {submit}")
    proc = subprocess.run(["bash", str(submit)])
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    run_main(main)
