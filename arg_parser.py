"""The one command-line parser every entry script uses (DESIGN.md §2).

Every flag of the original parser that does something keeps its name, meaning and default
(upstream-spec §1); dead flags (W&B, pruning, backdoor, ...) are not carried over. Flags this
project adds are marked "(new)". Names of datasets and architectures are case-insensitive.

Bad values are refused before any work starts: one line on stderr naming the flag, the value and
what is accepted, and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from forget_sets.select import LEVELS, parse_mem
from memorization.proxies import PROXIES
from models import ARCHS
from unlearn import canonical_method, method_names
from utils.data import DATASETS, canonical_dataset
from utils.errors import UserError

# Every --unlearn name (RUM: main_rum.py / main_rum_proxy.py and analysis.py only), from the registry.
UNLEARN_METHODS = method_names(with_rum=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip() != ""]


def build_parser(prog: str | None = None) -> OneLineParser:
    """The one parser: every flag of every script, in groups (names and choices from the registries)."""
    p = OneLineParser(prog=prog, description="Sharpness-aware machine unlearning toolkit")
    _add_data(p)
    _add_training(p)
    _add_sam(p)
    _add_forget_set(p)
    _add_unlearning(p)
    _add_masks(p)
    _add_memorization(p)
    _add_rum(p)
    _add_analysis(p)
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
    g.add_argument("--lr", type=float, default=0.1, help="pretraining learning rate")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight_decay", type=float, default=5e-4)
    g.add_argument("--epochs", type=int, default=50, help="pretraining epochs")
    g.add_argument("--warmup", type=int, default=0, help="warm-up epochs")
    g.add_argument("--no_aug", action="store_true", help="no training augmentation")
    g.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoint")
    g.add_argument("--checkpoint", default=None, help="run directory or checkpoint file to resume from")
    g.add_argument("--save_dir", default=None, help="output directory (main_train: ckpts/original)")


def _add_sam(p: OneLineParser) -> None:
    g = p.add_argument_group("SAM")
    g.add_argument("--sam", choices=("min", "max"), default=None, help="sharpness-aware optimizer sign")
    g.add_argument("--rho", type=float, default=0.1, help="SAM radius")
    g.add_argument("--lamb", type=float, default=1.0, help="SAM mixing coefficient lambda")
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
    g.add_argument("--unlearn_lr", type=float, default=0.01)
    g.add_argument("--unlearn_epochs", type=int, default=10)
    g.add_argument("--unlearn_optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="(new) sgd (RUM, SalUn) or adamw (the sharp-unlearn release)")
    g.add_argument("--decreasing_lr", type=_int_list, default=[91, 136], help="MultiStepLR milestones while unlearning")
    g.add_argument("--alpha", type=float, default=0.99, help="NG retain weight; FT_prune L1; wfisher scale")
    g.add_argument("--no-l1-epochs", dest="no_l1_epochs", type=int, default=0, help="FT_prune: last epochs without L1")
    g.add_argument("--beta", type=float, default=None, help="SCRUB KL weight")
    g.add_argument("--gamma", type=float, default=None, help="SCRUB CE weight")
    g.add_argument("--msteps", type=int, default=None, help="SCRUB max-steps epochs")
    g.add_argument("--kd_T", type=float, default=None, help="SCRUB temperature")
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
    g.add_argument("--subset_ratio", type=float, default=0.7, help="(new) fraction of the training split per model")
    g.add_argument("--shard", type=int, default=None, help="(new) this shard's index")
    g.add_argument("--num_shards", type=int, default=1, help="(new) number of shards")
    g.add_argument("--merge", action="store_true", help="(new) merge the shards into the score file")
    g.add_argument("--proxies", type=_str_list, default=None, help="(new) proxies to compute: ho_ret,curvature")
    g.add_argument("--ft_lr", type=float, default=0.1, help="holdout-retraining learning rate")
    g.add_argument("--ft_epochs", type=int, default=30, help="holdout-retraining epochs")
    g.add_argument("--h", type=float, default=0.01, help="loss-curvature step")


def _add_rum(p: OneLineParser) -> None:
    g = p.add_argument_group("RUM (main_rum.py, main_rum_proxy.py)")
    g.add_argument("--rum_methods", type=_str_list, default=None, help="(new) one method per group, e.g. none,FT,RL")
    g.add_argument("--rum_lr", type=_float_list, default=None, help="(new) learning rate per group")
    g.add_argument("--rum_epochs", type=_int_list, default=None, help="(new) epochs per group")
    g.add_argument("--rum_alpha", type=_float_list, default=None, help="(new) alpha per group")
    g.add_argument("--rum_groups", type=int, default=3, help="(new) number of groups K")


def _add_analysis(p: OneLineParser) -> None:
    g = p.add_argument_group("analysis (analysis.py, analysis_mia.py)")
    g.add_argument("--runs", default=None, help="(new) directory of unlearning runs (default ckpts/unlearn)")
    g.add_argument("--out", default=None, help="(new) output directory of the tables")
    g.add_argument("--es_normalized", action="store_true", help="(new) the sharp-unlearn normalized ES")


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None, *, description: str | None = None,
               epilog: str | None = None,
               extend: Callable[[OneLineParser], None] | None = None) -> argparse.Namespace:
    """Parse and validate the flags every script shares (``extend`` adds a script's own flags);
    raises nothing, exits 2 on bad input."""
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
    ns, _ = p.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return {d for d in names if getattr(ns, d) is not None}


def validate_common(args: argparse.Namespace) -> None:
    """Checks that do not need any file: canonical names and ranges."""
    args.dataset = canonical_dataset(args.dataset)
    arch = str(args.arch).lower()
    if arch not in ARCHS:
        raise UserError(f"--arch {args.arch!r}: unknown architecture; accepted: {', '.join(sorted(ARCHS))}")
    args.arch = arch
    for flag, value, low in (("--epochs", args.epochs, 1), ("--batch_size", args.batch_size, 1),
                             ("--unlearn_epochs", args.unlearn_epochs, 0), ("--warmup", args.warmup, 0),
                             ("--num_models", args.num_models, 1), ("--num_shards", args.num_shards, 1)):
        if value < low:
            raise UserError(f"{flag} {value}: must be an integer >= {low}")
    for flag, value in (("--lr", args.lr), ("--unlearn_lr", args.unlearn_lr), ("--weight_decay", args.weight_decay),
                        ("--momentum", args.momentum)):
        if value < 0:
            raise UserError(f"{flag} {value}: must be >= 0")
    if args.rho < 0:
        raise UserError(f"--rho {args.rho}: must be >= 0")
    if args.num_indexes_to_replace is not None and args.num_indexes_to_replace < 1:
        raise UserError(f"--num_indexes_to_replace {args.num_indexes_to_replace}: must be >= 1")
    if not 0 < args.subset_ratio < 1:
        raise UserError(f"--subset_ratio {args.subset_ratio}: must be in (0, 1)")
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
