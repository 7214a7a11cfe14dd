"""The sweep spec language: stages, their checks against the toolkit's parser, grid expansion, commands.

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
list is the axis, so a list-valued axis is a list of lists. A string may name other flags of the same
command in braces, ``"save": "{ckpts}/masks/{dataset}_{mem}_seed{seed}"`` (a flag the command does not
give: the parser's default; ``{{`` and ``}}`` are literal braces): :func:`fill_placeholders`.

Commands are rendered ``shlex``-quoted; ``launch.slurm`` turns them into job arrays and
``launch.local`` runs them here.
"""
from __future__ import annotations

import argparse
import difflib
import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from utils.errors import UserError

#: The entry scripts a stage may run; all use the one parser of arg_parser.py.
ENTRY_SCRIPTS = ("main_train.py", "main_memorization.py", "main_forget.py", "generate_mask.py", "main_random.py",
                 "main_rum.py", "main_rum_proxy.py", "analysis.py", "analysis_mia.py", "analysis_audit.py",
                 "imagenet_mem_subset.py")
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

_BRACES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def fill_placeholders(point: dict[str, Any], where: str) -> dict[str, Any]:
    """``point`` with each ``{name}`` in its string values replaced by the value of the flag
    ``name`` (dest or option name) in ``point``, or the parser's default when ``point`` does not
    give it; ``{{``/``}}`` are literal braces. A name that is no flag, a flag without a value, or a
    value that holds a placeholder itself is a UserError."""
    def text(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    def sub(m: re.Match) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        flag = lookup_flag(m.group(1), f"{where}: placeholder {m.group(0)}")
        value = point[flag.dest] if flag.dest in point else _parser_default(flag.dest)
        if value is None or isinstance(value, bool):
            raise UserError(f"{where}: placeholder {m.group(0)}: the flag has no value here")
        if _BRACES.search(text(value)):
            raise UserError(f"{where}: placeholder {m.group(0)}: its value {text(value)!r} holds a placeholder")
        return text(value)

    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(v) for v in value]
        return _BRACES.sub(sub, value) if isinstance(value, str) else value

    return {k: fill(v) for k, v in point.items()}


_DEFAULTS: dict[str, Any] | None = None


def _parser_default(dest: str) -> Any:
    global _DEFAULTS
    if _DEFAULTS is None:
        from arg_parser import build_parser

        _DEFAULTS = {a.dest: a.default for a in build_parser()._actions}
    return _DEFAULTS.get(dest)


def expand(stage: Stage) -> list[dict[str, Any]]:
    """The stage's runs, in the documented order, as ``{dest: value}`` (fixed, grid, per-method),
    placeholders filled (:func:`fill_placeholders`)."""
    axes = list(stage.grid)
    runs = []
    where = f"stage {stage.name or stage.script}"
    for combo in itertools.product(*(stage.grid[a] for a in axes)):
        point = dict(zip(axes, combo))
        method = point.get("unlearn", stage.fixed.get("unlearn"))
        extra = stage.per_method.get(str(method).lower(), {}) if method is not None else {}
        for inner in itertools.product(*extra.values()):
            runs.append(fill_placeholders({**stage.fixed, **point, **dict(zip(extra, inner))}, where))
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


def raising_parser() -> argparse.ArgumentParser:
    """The shared parser, but a bad value raises UserError instead of exiting."""
    from arg_parser import build_parser

    parser = build_parser()

    def error(message: str) -> None:
        raise UserError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser


def parse_toolkit_args(args: Sequence[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
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
