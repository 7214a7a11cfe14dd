"""The one command-line parser every entry script uses (DESIGN.md §2).

Every flag of the original parser that does something keeps its name, meaning and default
(upstream-spec §1); dead flags (pruning, backdoor, ...) are not carried over. The ``--wandb-*``
flags are kept and log to Weights & Biases only when asked (utils/wandb_log.py). Flags this
project adds are marked "(new)". Names of datasets and architectures are case-insensitive.

Every script accepts every flag (the original's commands pass flags a script does not read), but
``--help`` shows only the script's own groups (:data:`SCRIPT_GROUPS`), with their defaults.

Bad values are refused before any work starts: one line on stderr naming the flag, the value and
what is accepted, and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Sequence

from evaluation.audits.pools import DEFAULT_POOL as DEFAULT_SHADOW_POOL, POOLS as SHADOW_POOLS
from forget_sets.select import LEVELS, parse_mem
from memorization.proxies import PROXIES
from models import ARCHS
from trainer.device import PRECISIONS
from unlearn import canonical_method, method_names
from utils.data import DATASETS, canonical_dataset
from utils.errors import UserError
from utils.wandb_log import MODES as WANDB_MODES

# Every --unlearn name (RUM: main_rum.py / main_rum_proxy.py and analysis.py only), from the registry.
UNLEARN_METHODS = method_names(with_rum=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line and exit status 2, and an abbreviated flag
    (``--epoch`` for ``--epochs``) is an unknown flag rather than silently expanded."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _float_list(text: str) -> list[float]:
    try:
        values = [float(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip() != ""]


def build_parser(prog: str | None = None) -> OneLineParser:
    """The one parser: every flag of every script, in groups (names and choices from the registries)."""
    p = OneLineParser(prog=prog, description="Sharpness-aware machine unlearning toolkit")
    for add in FLAG_GROUPS.values():
        add(p)
    return p


def _add_data(p: OneLineParser) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default="datasets", help="data root (torchvision layout)")
    g.add_argument("--dataset", default="cifar10",
                   help=f"{' | '.join(DATASETS)} (case-insensitive)")
    g.add_argument("--download", action="store_true", help="(new) download the dataset with torchvision if missing")
    g.add_argument("--split_seed", type=int, default=1, help="(new) seed of the per-class 10%% validation split")
    g.add_argument("--arch", default="resnet18", help=f"model architecture: {' | '.join(ARCHS)} (case-insensitive)")
    g.add_argument("--imagenet_arch", action="store_true", help="ResNet with the ImageNet stem")
    g.add_argument("--seed", type=int, default=2, help="global seed")
    g.add_argument("--train_seed", type=int, default=None, help="seed of the model initialization (default: --seed)")
    g.add_argument("--device", default="auto", help="(new) auto | cpu | cuda | cuda:N")
    g.add_argument("--gpu", type=int, default=0, help="CUDA device index used by --device auto/cuda")
    g.add_argument("--workers", type=int, default=0, help="data-loading workers (streamed datasets only)")
    g.add_argument("--ckpts", default="ckpts", help="(new) artifact root: original/, forget_sets/, unlearn/, ...")
    g.add_argument("--overwrite", action="store_true", help="(new) replace an existing result")


def _add_training(p: OneLineParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--batch_size", type=int, default=256)
    g.add_argument("--lr", type=_finite_float, default=0.1, help="pretraining learning rate")
    g.add_argument("--momentum", type=_finite_float, default=0.9)
    g.add_argument("--weight_decay", type=_finite_float, default=5e-4)
    g.add_argument("--epochs", type=int, default=50, help="pretraining epochs")
    g.add_argument("--warmup", type=int, default=0, help="warm-up epochs")
    g.add_argument("--no_aug", action="store_true", help="no training augmentation")
    g.add_argument("--precision", type=str.lower, choices=PRECISIONS, default="auto",
                   help="(new) training forward passes: auto (bf16 autocast on CUDA, fp32 on the CPU) | fp32 | bf16; "
                        "evaluation and gradient statistics are always fp32")
    g.add_argument("--compile", action="store_true", help="(new) torch.compile the model for training")
    g.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoint")
    g.add_argument("--checkpoint", default=None, help="run directory or checkpoint file to resume from")
    g.add_argument("--save_dir", default=None, help="output directory (main_train: ckpts/original)")


def _add_sam(p: OneLineParser) -> None:
    g = p.add_argument_group("SAM")
    g.add_argument("--sam", choices=("min", "max"), default=None, help="sharpness-aware optimizer sign")
    g.add_argument("--rho", type=_finite_float, default=0.1, help="SAM radius")
    g.add_argument("--lamb", type=_finite_float, default=1.0, help="SAM mixing coefficient lambda")
    g.add_argument("--adaptive", action="store_true", help="adaptive SAM (ASAM)")
    g.add_argument("--separate", nargs=2, metavar=("RETAIN", "FORGET"), choices=("min", "max"), default=None,
                   help="Sharp MinMax: SAM signs of the retain and forget steps (needs --path)")


def _add_forget_set(p: OneLineParser) -> None:
    g = p.add_argument_group("forget set")
    g.add_argument("--num_indexes_to_replace", type=int, default=None, help="forget-set size N")
    g.add_argument("--class_to_replace", type=_int_list, default=[-1], help="classes to forget (-1 = all)")
    g.add_argument("--mem", default=None, help=f"memorization group: {'|'.join(LEVELS)} or 0|2|4")
    g.add_argument("--mem_proxy", default=None, help=f"memorization proxy: {'|'.join(PROXIES)}")
    g.add_argument("--mem_file", default=None, help="(new) memorization score file (.npz)")
    g.add_argument("--proxy_file", default=None, help="(new) proxy file (.npz; default: the pretrained run's proxies.npz)")
    g.add_argument("--group_index", type=int, default=None, help="ES group index (-1 = mix)")
    g.add_argument("--shuffle", action="store_true", help="shuffle the memorization groups (RUM baseline)")
    g.add_argument("--forget_set", default=None, help="(new) a forget-set file to use as is")


def _add_unlearning(p: OneLineParser) -> None:
    g = p.add_argument_group("unlearning")
    g.add_argument("--unlearn", default=None, help=f"unlearning method: {', '.join(UNLEARN_METHODS)}")
    g.add_argument("--mask", default=None, help="model to start from: run directory, model.pt or original checkpoint")
    g.add_argument("--path", default=None, help="saliency-mask file")
    g.add_argument("--unlearn_lr", type=_finite_float, default=0.01)
    g.add_argument("--unlearn_epochs", type=int, default=10)
    g.add_argument("--unlearn_optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="(new) sgd (RUM, SalUn) or adamw (the sharp-unlearn release)")
    g.add_argument("--decreasing_lr", type=_int_list, default=[91, 136], help="MultiStepLR milestones while unlearning")
    g.add_argument("--alpha", type=_finite_float, default=0.99, help="NG retain weight; FT_prune L1; wfisher scale")
    g.add_argument("--no-l1-epochs", dest="no_l1_epochs", type=int, default=0, help="FT_prune: last epochs without L1")
    g.add_argument("--beta", type=_finite_float, default=None, help="SCRUB KL weight")
    g.add_argument("--gamma", type=_finite_float, default=None, help="SCRUB CE weight")
    g.add_argument("--msteps", type=int, default=None, help="SCRUB max-steps epochs")
    g.add_argument("--kd_T", type=_finite_float, default=None, help="SCRUB temperature")
    g.add_argument("--release", action="store_true",
                   help="(new) the sharp-unlearn release's behaviour for every deviation that changes training "
                        "(README: Deviations from the release)")
    g.add_argument("--no_save", action="store_true", help="do not write the unlearned model")
    g.add_argument("--es", action="store_true", help="entanglement score of the forget set")


def _add_masks(p: OneLineParser) -> None:
    g = p.add_argument_group("saliency masks (generate_mask.py)")
    g.add_argument("--save", default=None, help="(new) mask output directory (alias of --save_dir)")
    g.add_argument("--mask_ratio", type=_float_list, default=None, help="(new) ratios, default 0.1,...,1.0")
    g.add_argument("--mask_order", choices=("largest", "smallest"), default="largest",
                   help="(new) keep the largest saliency (SalUn) or the smallest (sharp-unlearn release)")


def _add_memorization(p: OneLineParser) -> None:
    g = p.add_argument_group("memorization (main_memorization.py)")
    g.add_argument("--num_models", type=int, default=128, help="(new) models of the subsampled estimator")
    g.add_argument("--subset_ratio", type=_finite_float, default=0.7, help="(new) fraction of the training split per model")
    g.add_argument("--shard", type=int, default=None, help="(new) this shard's index")
    g.add_argument("--num_shards", type=int, default=1, help="(new) number of shards")
    g.add_argument("--merge", action="store_true", help="(new) merge the shards into the score file")
    g.add_argument("--proxies", type=_str_list, default=None, help="(new) proxies to compute: ho_ret,curvature")
    g.add_argument("--ft_lr", type=_finite_float, default=0.1, help="holdout-retraining learning rate")
    g.add_argument("--ft_epochs", type=int, default=30, help="holdout-retraining epochs")
    g.add_argument("--h", type=_finite_float, default=0.01, help="loss-curvature step")


def _add_rum(p: OneLineParser) -> None:
    g = p.add_argument_group("RUM (main_rum.py, main_rum_proxy.py)")
    g.add_argument("--rum_methods", type=_str_list, default=None, help="(new) one method per group, e.g. none,FT,RL")
    g.add_argument("--rum_lr", type=_float_list, default=None, help="(new) learning rate per group")
    g.add_argument("--rum_epochs", type=_int_list, default=None, help="(new) epochs per group")
    g.add_argument("--rum_alpha", type=_float_list, default=None, help="(new) alpha per group")
    g.add_argument("--rum_groups", type=int, default=3, help="(new) number of groups K")
    g.add_argument("--aug", action="store_true",
                   help="(new) augment the RUM steps' batches (RUM's scripts, and the default, do not)")


def _add_analysis(p: OneLineParser) -> None:
    g = p.add_argument_group("analysis (analysis.py, analysis_mia.py)")
    g.add_argument("--runs", default=None, help="(new) directory of unlearning runs (default ckpts/unlearn)")
    g.add_argument("--out", default=None, help="(new) output directory of the tables")
    g.add_argument("--es_normalized", action="store_true", help="(new) the sharp-unlearn normalized ES")
    g.add_argument("--retrain", default=None, metavar="TAG",
                   help="(new) the retrain run (its method tag, e.g. retrain_lr0.1_ep50) that scores every run when "
                        "several retrains match a forget set, seed and pretraining recipe")
    g.add_argument("--select", default=None, choices=("random",), metavar="CRITERION",
                   help="(new) one row per method and start model: the hyperparameters with the best mean score on "
                        "the random forget sets of the same size (random: never the evaluated forget sets)")


def _add_wandb(p: OneLineParser) -> None:
    g = p.add_argument_group("Weights & Biases (optional: mirrors log.jsonl and metrics.json; needs `pip install wandb`)")
    g.add_argument("--wandb-mode", dest="wandb_mode", choices=WANDB_MODES, default=None,
                   help="online | offline | disabled (given and not disabled: log; default: log only when another "
                        "--wandb-* flag is given)")
    g.add_argument("--wandb-project", dest="wandb_project", default=None, help="W&B project (given: log)")
    g.add_argument("--wandb-entity", dest="wandb_entity", default=None, help="W&B entity (user or team)")
    g.add_argument("--wandb-run-id", dest="wandb_run_id", default=None, help="continue this W&B run")
    g.add_argument("--wandb-group-name", dest="wandb_group_name", default=None,
                   help="W&B group (default: <arch>-<dataset>-<method>)")


def _add_audit(p: OneLineParser) -> None:
    g = p.add_argument_group("audits (analysis_audit.py)")
    g.add_argument("--audit", type=_str_list, default=None, help="(new) audits to run: lira,klom,relearn (default all)")
    g.add_argument("--num_shadows", type=int, default=16, help="(new) LiRA shadow models of the audited runs' recipe")
    g.add_argument("--train_shadows", action="store_true",
                   help="(new) train the shadow models that are missing (stored under <ckpts>/audit/, reused)")
    g.add_argument("--shadow_pool", choices=SHADOW_POOLS, default=DEFAULT_SHADOW_POOL,
                   help="(new) each shadow leaves out the whole audited forget set (retrain: shadows are retrains "
                        "of it; no IN models), a random half of it plus as many other examples (forget: IN and "
                        "OUT models, the likelihood ratio), or a random half of the training split (all)")
    g.add_argument("--audit_level", type=_finite_float, default=0.05, help="(new) level of LiRA's 'never seen' test")
    g.add_argument("--lira_test", choices=("t", "gauss"), default="t",
                   help="(new) LiRA p-value: Student-t prediction (exact for few shadows) or plain Gaussian")
    g.add_argument("--klom_fit", choices=("gauss", "hist"), default="gauss",
                   help="(new) KLOM: Gaussian fit per side or 20-bin histograms")
    g.add_argument("--relearn_steps", type=int, default=10, help="(new) relearning attack: fine-tuning steps")
    g.add_argument("--relearn_lr", type=_finite_float, default=0.01, help="(new) relearning attack: learning rate")
    g.add_argument("--relearn_batch_size", type=int, default=32, help="(new) relearning attack: batch size")
    g.add_argument("--relearn_fraction", type=_finite_float, default=0.5,
                   help="(new) relearning attack: fraction of the forget set fine-tuned on (the rest is scored)")
    g.add_argument("--relearn_on", choices=("forget", "retain"), default="forget",
                   help="(new) relearning attack: fine-tune on that part of the forget set, or on as many retain "
                        "examples")


FLAG_GROUPS: dict[str, Callable[[OneLineParser], None]] = {
    "data": _add_data, "training": _add_training, "sam": _add_sam, "forget_set": _add_forget_set,
    "unlearning": _add_unlearning, "masks": _add_masks, "memorization": _add_memorization, "rum": _add_rum,
    "analysis": _add_analysis, "wandb": _add_wandb, "audit": _add_audit,
}


def group_dests(*groups: str) -> frozenset[str]:
    """The destinations of the flags in the named groups of :func:`build_parser` (``"training"``,
    ``"sam"``, ...): what a stage reads, e.g. to compare two runs' settings."""
    p = OneLineParser()
    for g in groups:
        if g not in FLAG_GROUPS:
            raise ValueError(f"unknown flag group {g!r}; known: {', '.join(FLAG_GROUPS)}")
        FLAG_GROUPS[g](p)
    return frozenset(a.dest for a in p._actions if a.dest != "help")


# The flags each entry script reads, for its --help: flag groups of FLAG_GROUPS, and "--dest" for a
# single flag of another group. Every script ACCEPTS every flag; a group no script names is shown by all.
SCRIPT_GROUPS: dict[str, tuple[str, ...]] = {
    "main_train.py": ("data", "training", "sam"),
    "main_memorization.py": ("data", "training", "sam", "forget_set", "memorization", "--mask"),
    "main_forget.py": ("data", "training", "sam", "forget_set", "unlearning", "wandb", "--es_normalized"),
    "main_random.py": ("data", "training", "sam", "forget_set", "unlearning", "wandb"),
    "generate_mask.py": ("data", "training", "sam", "forget_set", "unlearning", "masks"),
    "main_rum.py": ("data", "training", "sam", "forget_set", "unlearning", "masks", "rum", "wandb"),
    "main_rum_proxy.py": ("data", "training", "sam", "forget_set", "unlearning", "masks", "rum", "wandb"),
    "analysis.py": ("data", "forget_set", "analysis", "--unlearn", "--es", "--mask", "--no_aug", "--batch_size"),
    "analysis_mia.py": ("data", "forget_set", "analysis", "--unlearn", "--es", "--mask", "--no_aug", "--batch_size"),
    "imagenet_mem_subset.py": ("data", "forget_set", "--save_dir"),
    "analysis_audit.py": ("data", "forget_set", "analysis", "audit", "--unlearn"),
}
HELP_TAIL = "other flags of the toolkit are accepted and ignored here"


def wants_help(argv: Sequence[str] | None) -> bool:
    """``-h``/``--help`` among the arguments (before a ``--``)."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    if "--" in tokens:
        tokens = tokens[:tokens.index("--")]
    return "-h" in tokens or "--help" in tokens


def _shown_default(action: argparse.Action) -> str | None:
    d = action.default
    if d is None or d is False or d is argparse.SUPPRESS or action.nargs == 0:
        return None
    text = ",".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
    return text.replace("%", "%%")


def script_help(prog: str | None, *, description: str | None = None, epilog: str | None = None,
                extend: Callable[[OneLineParser], None] | None = None) -> str:
    """The ``--help`` text of ``prog``: the flags of its :data:`SCRIPT_GROUPS` (all flags for a
    script not in the table, a script's own ``extend`` flags always), each with its default, and
    the closing line :data:`HELP_TAIL`."""
    p = build_parser(prog)
    if extend is not None:
        extend(p)
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # the texts below are wrapped here
    p.description = textwrap.fill(description if description is not None else p.description or "", 100)
    p.epilog = (textwrap.fill(epilog, 100) + "\n\n" if epilog else "") + f"{HELP_TAIL}."
    wanted = SCRIPT_GROUPS.get(str(prog or ""))
    if wanted is not None:
        named = {g for entries in SCRIPT_GROUPS.values() for g in entries if not g.startswith("--")}
        grouped = group_dests(*FLAG_GROUPS)
        keep = set(group_dests(*[g for g in FLAG_GROUPS if g in wanted or g not in named]))
        keep |= {e[2:] for e in wanted if e.startswith("--")}
        shown = [a for a in p._actions if a.dest not in grouped or a.dest in keep]
        p._actions[:] = shown
        for grp in p._action_groups:
            grp._group_actions[:] = [a for a in grp._group_actions if a in shown]
    for a in p._actions:
        d = _shown_default(a)
        if d is not None and "default" not in (a.help or "").lower():
            a.help = f"{a.help} (default: {d})" if a.help else f"(default: {d})"
    return p.format_help()


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None, *, description: str | None = None,
               epilog: str | None = None,
               extend: Callable[[OneLineParser], None] | None = None) -> argparse.Namespace:
    """Parse and validate the flags every script shares (``extend`` adds a script's own flags);
    raises nothing, exits 2 on bad input."""
    if wants_help(argv):
        sys.stdout.write(script_help(prog, description=description, epilog=epilog, extend=extend))
        sys.exit(0)
    parser = build_parser(prog)
    if extend is not None:
        extend(parser)
    if description is not None:
        parser.description = description
    if epilog is not None:
        parser.epilog = epilog
    args = parser.parse_args(argv)
    try:
        validate_common(args)
    except UserError as e:
        parser.error(str(e))
    return args


def given_flags(argv: Sequence[str] | None, names: Sequence[str], prog: str | None = None) -> set[str]:
    """Which of the flags ``names`` (destinations, e.g. ``"dataset"``) were given on the command
    line, as opposed to left at their defaults: ``argv`` is parsed a second time with those
    defaults set to None, so ``--flag=value`` counts as argparse counts it."""
    p = build_parser(prog)
    p.set_defaults(**{d: None for d in names})
    tokens = [t for t in (sys.argv[1:] if argv is None else argv) if t not in ("-h", "--help")]
    ns, _ = p.parse_known_args(tokens)
    return {d for d in names if getattr(ns, d) is not None}


@dataclass(frozen=True)
class Domain:
    """The values a numeric flag accepts (every float flag is also finite: :func:`_finite_float`)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False  # low itself is excluded
    open_high: bool = False
    integer: bool = False

    def accepts(self, v: float) -> bool:
        return not ((self.low is not None and (v < self.low or (self.open_low and v == self.low)))
                    or (self.high is not None and (v > self.high or (self.open_high and v == self.high))))

    def describe(self) -> str:
        kind = "an integer " if self.integer else ""
        if self.high is None:
            return f"{kind}{'>' if self.open_low else '>='} {_num(self.low)}"
        return (f"{kind}in {'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.open_high else ']'}")


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


SEED = Domain(0, 2 ** 32 - 1, integer=True)  # numpy's RandomState takes seeds in [0, 2**32)
# Every numeric flag's domain (list flags: each value), checked before any work; --lamb takes any finite number.
DOMAINS: dict[str, Domain] = {
    "split_seed": SEED, "seed": SEED, "train_seed": SEED, "gpu": Domain(0, integer=True),
    "workers": Domain(0, integer=True), "batch_size": Domain(1, integer=True), "lr": Domain(0),
    "momentum": Domain(0, 1), "weight_decay": Domain(0), "epochs": Domain(1, integer=True),
    "warmup": Domain(0, integer=True), "rho": Domain(0), "lamb": Domain(),
    "num_indexes_to_replace": Domain(1, integer=True),
    "class_to_replace": Domain(-1, integer=True), "group_index": Domain(-1, integer=True), "unlearn_lr": Domain(0),
    "unlearn_epochs": Domain(0, integer=True), "decreasing_lr": Domain(0, integer=True), "alpha": Domain(0),
    "no_l1_epochs": Domain(0, integer=True), "beta": Domain(0), "gamma": Domain(0),
    "msteps": Domain(0, integer=True), "kd_T": Domain(0, open_low=True), "mask_ratio": Domain(0, 1, open_low=True),
    "num_models": Domain(1, integer=True), "subset_ratio": Domain(0, 1, open_low=True, open_high=True),
    "num_shards": Domain(1, integer=True), "ft_lr": Domain(0), "ft_epochs": Domain(1, integer=True),
    "h": Domain(0, open_low=True), "rum_lr": Domain(0), "rum_epochs": Domain(0, integer=True),
    "rum_alpha": Domain(0), "rum_groups": Domain(1, integer=True),
    "num_shadows": Domain(2, integer=True), "audit_level": Domain(0, 1, open_low=True, open_high=True),
    "relearn_steps": Domain(0, integer=True), "relearn_lr": Domain(0), "relearn_batch_size": Domain(1, integer=True),
    "relearn_fraction": Domain(0, 1, open_low=True, open_high=True),
}


def _flag(dest: str) -> str:
    return "--no-l1-epochs" if dest == "no_l1_epochs" else f"--{dest}"


def check_domains(args: argparse.Namespace) -> None:
    """Every numeric flag within its :data:`DOMAINS` entry (unset flags are skipped)."""
    for dest, domain in DOMAINS.items():
        value = getattr(args, dest, None)
        for v in (value if isinstance(value, list) else [value]):
            if v is not None and not domain.accepts(v):
                shown = ",".join(map(_num, value)) if isinstance(value, list) else _num(v)
                raise UserError(f"{_flag(dest)} {shown}: must be {domain.describe()}")
    if args.warmup and args.warmup >= args.epochs:
        raise UserError(f"--warmup {args.warmup}: must be less than --epochs {args.epochs} (warm-up epochs are "
                        f"part of the training epochs)")


def validate_common(args: argparse.Namespace) -> None:
    """Checks that do not need any file: canonical names and ranges."""
    args.dataset = canonical_dataset(args.dataset)
    arch = str(args.arch).lower()
    if arch not in ARCHS:
        raise UserError(f"--arch {args.arch!r}: unknown architecture; accepted: {', '.join(sorted(ARCHS))}")
    args.arch = arch
    check_domains(args)
    if args.shard is not None and not 0 <= args.shard < args.num_shards:
        raise UserError(f"--shard {args.shard}: must be in [0, --num_shards {args.num_shards})")
    if args.unlearn is not None:
        m = canonical_method(args.unlearn)
        if m is None:
            raise UserError(f"--unlearn {args.unlearn!r}: unknown method; accepted: {', '.join(UNLEARN_METHODS)}")
        args.unlearn = m
    if args.mem is not None:
        args.mem = parse_mem(args.mem)
    if args.save is not None and args.save_dir is None:
        args.save_dir = args.save
