"""Optional Weights & Biases logging, with the original's ``--wandb-*`` flags (upstream-spec §1).

The original called ``wandb.init`` in every script. Here W&B is only a mirror of what the run
directory already holds, and is never required:

- it logs only when asked: a ``--wandb-project`` (or ``--wandb-entity``, ``--wandb-run-id``,
  ``--wandb-group-name``, ``--wandb-mode online|offline``) is given and ``--wandb-mode`` is not
  ``disabled`` (:attr:`WandbSettings.asked`);
- ``wandb`` is imported only then; when it is not installed one line says so and the run goes on;
- a W&B failure (no network, bad credentials) is one line, and the run goes on unlogged;
- each row of the run's ``log.jsonl`` is logged as it is written (:class:`utils.runlog.EpochLog`),
  and ``metrics.json``'s numbers become the run's summary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

MISSING = "wandb is not installed; not logging (pip install wandb)"
MODES = ("online", "offline", "disabled")
DEFAULT_PROJECT = "sharp-unlearn"


@dataclass(frozen=True)
class WandbSettings:
    """The ``--wandb-*`` flags; None = not given."""

    mode: str | None = None  # --wandb-mode online | offline | disabled
    project: str | None = None  # --wandb-project
    entity: str | None = None  # --wandb-entity
    run_id: str | None = None  # --wandb-run-id: continue that W&B run
    group: str | None = None  # --wandb-group-name

    @property
    def asked(self) -> bool:
        """Whether the flags ask for logging: any of them given, and the mode not ``disabled``."""
        if self.mode == "disabled":
            return False
        return any(v is not None for v in (self.mode, self.project, self.entity, self.run_id, self.group))


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The numbers (and strings) of a nested mapping, keys joined with ``/``; lists and None dropped."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
    return out


class WandbRun:
    """A started W&B run. Its methods never raise: the first failure prints one line and turns
    logging off for the rest of the run."""

    def __init__(self, run: Any, out: Callable[[str], None] = print) -> None:
        self._run, self._out = run, out

    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        if self._run is None:
            return
        try:
            fn()
        except Exception as e:  # W&B is a side channel: it must not end a run
            self._out(f"wandb: {what} failed ({type(e).__name__}: {str(e).strip()[:200]}); not logging any more")
            self._run = None

    def log(self, row: Mapping[str, Any], prefix: str = "") -> None:
        """One row (of ``log.jsonl``), its keys prefixed with ``prefix``."""
        self._guard("log", lambda: self._run.log(flatten(row, prefix)))

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Set the summary (``metrics.json``) and close the run."""
        def close() -> None:
            if summary:
                self._run.summary.update(flatten(summary))
            self._run.finish()
        self._guard("finish", close)
        self._run = None


def start(settings: WandbSettings | None, *, name: str, config: Mapping[str, Any], group: str | None = None,
          out: Callable[[str], None] = print) -> WandbRun | None:
    """A W&B run when ``settings`` ask for one and ``wandb`` is installed and starts; else None
    (with one line saying why, unless logging was not asked for)."""
    if settings is None or not settings.asked:
        return None
    try:
        import wandb
    except ImportError:
        out(MISSING)
        return None
    kwargs: dict[str, Any] = dict(project=settings.project or DEFAULT_PROJECT, entity=settings.entity,
                                  mode=settings.mode or "online", group=settings.group or group, name=name,
                                  config=flatten(config))
    if settings.run_id is not None:
        kwargs.update(id=settings.run_id, resume="allow")
    try:
        run = wandb.init(**kwargs)
    except Exception as e:
        out(f"wandb could not start ({type(e).__name__}: {str(e).strip()[:200]}); not logging")
        return None
    if run is None:
        return None
    out(f"wandb: logging to project {kwargs['project']} ({kwargs['mode']}), run {name}")
    return WandbRun(run, out)


__all__ = ["DEFAULT_PROJECT", "MISSING", "MODES", "WandbRun", "WandbSettings", "flatten", "start"]
