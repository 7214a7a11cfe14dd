"""Fake unlearning run directories (``metrics.json`` files with hand-chosen accuracies) for the
tests of results/ and stages/analysis.py; imported as ``fake_runs`` by the tests beside it, and by
path from tests/stages/test_analysis.py."""
import json
from pathlib import Path

from stages.analysis import main as run_analysis

# Hand-chosen accuracies (retain, forget, test, MIA-efficacy) of the mem-high cell.
RETRAIN_HIGH = {1: (1.00, 0.10, 0.90, 0.80), 2: (1.00, 0.15, 0.88, 0.75), 3: (0.99, 0.20, 0.89, 0.70)}
FT_HIGH = {1: (0.98, 0.30, 0.85, 0.50), 2: (0.97, 0.25, 0.86, 0.60), 3: (0.99, 0.40, 0.84, 0.55)}
# ToW per seed, by hand:
#   seed 1: (1 - 0.20)(1 - 0.02)(1 - 0.05) = 0.80 * 0.98 * 0.95 = 0.7448
#   seed 2: (1 - 0.10)(1 - 0.03)(1 - 0.02) = 0.90 * 0.97 * 0.98 = 0.85554
#   seed 3: (1 - 0.20)(1 - 0.00)(1 - 0.05) = 0.80 * 1.00 * 0.95 = 0.76
FT_HIGH_TOW = [0.7448, 0.85554, 0.76]
# ToW-MIA per seed: (1 - |dMIA|)(1 - |dRA|)(1 - |dTA|)
#   seed 1: 0.70 * 0.98 * 0.95 = 0.6517; seed 2: 0.85 * 0.97 * 0.98 = 0.80801; seed 3: 0.85 * 1 * 0.95 = 0.8075
FT_HIGH_TOW_MIA = [0.6517, 0.80801, 0.8075]

LEVELS = ("low", "mid", "high")
SEEDS = (1, 2, 3)


def write_run(root, *, method, tag, forget_set, seed, acc, dataset="digits", arch="cnn_s", kind="mem",
              level=None, proxy=None, n=60, sha=None, collapsed=False, group_index=None, model_name=None,
              start_recipe=None, hparams=None, sam=None, rum=None, fs_file=None):
    retain, forget, test, mia = acc
    d = Path(root) / forget_set / tag / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    metrics = {
        "method": method, "method_tag": tag, "dataset": dataset, "arch": arch, "seed": seed,
        "forget_set": forget_set, "forget_set_file": fs_file or f"ckpts/forget_sets/{forget_set}.npz",
        "forget_set_sha256": sha if sha is not None else f"sha-{forget_set}",
        "forget_kind": kind, "mem_level": level, "mem_proxy": proxy, "group_index": group_index,
        "num_forget": n,
        "accuracy": {"retain": retain, "forget": forget, "val": test, "test": test},
        "mia": {"correctness": mia, "confidence": mia, "entropy": mia, "m_entropy": mia, "prob": mia},
        "unlearn_seconds": 1.0, "collapsed": collapsed, "pretrained": "ckpts/original/x", "sam": sam,
        "hparams": hparams or {},
    }
    if rum is not None:
        metrics["rum"] = rum
    if model_name is not None:
        metrics["model_name"] = model_name
    if start_recipe is not None:
        metrics["start_recipe"] = start_recipe
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def make_fake_runs(root, *, with_cifar=True):
    """digits/cnn_s: FT, GA, original and retrain on mem low/mid/high (n=60), seeds 1-3; the retrain
    of mem-mid seed 3 is missing. With ``with_cifar``: cifar10/resnet18 runs on a proxy forget
    set (proxy-confidence-high, n=3000), FT and retrain, seeds 1-2."""
    root = Path(root)
    for level in LEVELS:
        fs = f"digits_mem-{level}_n60"
        base_fa = {"low": 0.95, "mid": 0.60, "high": 0.10}[level]
        for seed in SEEDS:
            if level == "high":
                r, ft = RETRAIN_HIGH[seed], FT_HIGH[seed]
            else:
                r = (1.00, base_fa, 0.90, 0.30)
                ft = (0.99, base_fa + 0.01 * seed, 0.88, 0.35)
            if not (level == "mid" and seed == 3):
                write_run(root, method="retrain", tag="retrain", forget_set=fs, seed=seed, acc=r, level=level)
            write_run(root, method="FT", tag="FT_lr0.01_ep10_sgd", forget_set=fs, seed=seed, acc=ft, level=level)
            write_run(root, method="GA", tag="GA_lr0.0001_ep5_sgd", forget_set=fs, seed=seed,
                      acc=(0.90, 0.05 * seed, 0.80, 0.90), level=level)
            write_run(root, method="original", tag="original", forget_set=fs, seed=seed,
                      acc=(1.00, 1.00, 0.92, 0.05), level=level)
    if with_cifar:
        fs = "cifar10_proxy-confidence-high_n3000"
        for seed in (1, 2):
            kw = dict(forget_set=fs, seed=seed, dataset="cifar10", arch="resnet18", kind="proxy", level="high",
                      proxy="confidence", n=3000)
            write_run(root, method="retrain", tag="retrain", acc=(1.0, 0.2, 0.93, 0.7), **kw)
            write_run(root, method="FT", tag="FT_lr0.01_ep10_sgd", acc=(0.99, 0.3 + 0.1 * seed, 0.92, 0.5), **kw)
    return root


def analyse(root, out, *flags, metric="tow"):
    """Run the analysis in-process; return the parsed JSON output."""
    code = run_analysis(metric, f"{metric}.py", ["--runs", str(root), "--out", str(out), *flags])
    assert code == 0
    return json.loads((Path(out) / f"{metric}.json").read_text())


def cell(js, tag, col):
    found = [c for c in js["cells"] if c["method_tag"] == tag and c["forget_set"] == col]
    assert len(found) == 1, (tag, col)
    return found[0]


# The quickstart's method set (scripts/quickstart.sh): method, tag, start recipe, hparams, sam, rum.
SGD_START = {"key": {"optimizer": "sgd", "epochs": 15}, "label": "SGD"}
SAM_START = {"key": {"optimizer": "sgd", "epochs": 15, "sam": "min"}, "label": "SAM-min rho1 lamb1 adaptive"}
_SAM = {"adaptive": True, "lamb": 1.0, "rho": 1.0, "separate": ["min", "max"], "sign": "min"}


def it(lr=0.01, epochs=5, **kw):
    """The ``hparams`` record of an iterative method (as unlearn.config.hparams_record writes it)."""
    return {"lr": lr, "epochs": epochs, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9,
            "weight_decay": 0.0005, "milestones": [91, 136], "augment": True, "separate": None, "mask_file": None,
            "mask_fraction": None, **kw}


def _step(**kw):
    return {**it(augment=False), **kw}


QUICKSTART = [
    ("original", "original", "SGD", it(10), None, None),
    ("original", "original", "SAM", it(10), None, None),
    ("retrain", "retrain_lr0.1_ep15_bs64", "SGD", {"recipe": {"lr": 0.1, "epochs": 15, "batch_size": 64,
                                                              "sam": None}}, None, None),
    ("retrain", "retrain_lr0.1_ep15_bs64_sam", "SAM", {"recipe": {"lr": 0.1, "epochs": 15, "batch_size": 64,
                                                                  "sam": {"rho": 1.0}}}, None, None),
    ("FT", "FT_lr0.01_ep5_sgd_bs64", "SGD", it(), None, None),
    ("FT_prune", "FT_prune_alpha0.0001_lr0.01_ep5_sgd_bs64", "SGD", it(alpha=0.0001, no_l1_epochs=0), None, None),
    ("GA", "GA_lr0.01_ep5_sgd_bs64", "SGD", it(), None, None),
    ("NG", "NG_alpha0.99_lr0.01_ep3_sgd_bs64", "SGD", it(epochs=3, alpha=0.99), None, None),
    ("NG", "NG_alpha0.99_sep", "SGD", it(epochs=3, alpha=0.99, separate=["min", "max"], mask_fraction=0.5,
                                         mask_file="masks/s2/mask_largest_0.5.pt"), _SAM, None),
    ("NG", "NG_alpha0.99_sep", "SAM", it(epochs=3, alpha=0.99, separate=["min", "max"], mask_fraction=0.5,
                                         mask_file="masks/s2-sam/mask_largest_0.5.pt"), _SAM, None),
    ("RL", "RL_lr0.01_ep5_sgd_bs64_mask_largest_0.5", "SGD",
     it(mask_fraction=0.5, mask_file="masks/s2/mask_largest_0.5.pt"), None, None),
    ("RL_og", "RL_og_lr0.01_ep5_sgd_bs64", "SGD", it(), None, None),
    ("SCRUB", "SCRUB_msteps4_kdT4_beta0.001_gamma0.99_lr0.005_ep5_sgd_bs64", "SGD",
     it(0.005, beta=0.001, gamma=0.99, kd_T=4.0, msteps=4), None, None),
    ("wfisher", "wfisher_alpha1", "SGD", it(10, alpha=1.0), None, None),
    ("RUM", "RUM_NG-NG-NG_proxy-confidence", "SGD",
     {"methods": ["NG", "NG", "NG"], "mask_order": None, "mask_ratio": None,
      "steps": [_step(alpha=0.99), _step(alpha=0.97), _step(alpha=0.97, lr=0.001, epochs=10)]}, None,
     {"grouping": "proxy", "proxy": "confidence", "shuffle": False, "groups": 3}),
    ("RUM", "RUM_none-FT-RL_mem_q0.5", "SGD",
     {"methods": ["none", "FT", "RL"], "mask_order": "largest", "mask_ratio": 0.5,
      "steps": [None, _step(lr=0.1, epochs=10), _step(lr=0.1, mask="in-process", mask_fraction=0.5)]}, None,
     {"grouping": "memorization", "proxy": None, "shuffle": False, "groups": 3}),
]
QUICKSTART_LABELS = ["Original", "Original", "FT", "ℓ1-sparse", "GA", "NegGrad+", "Sharp MinMax", "Sharp MinMax",
                     "SCRUB", "IU (WoodFisher)", "SalUn", "Random labels", "RUM (NegGrad+→NegGrad+→NegGrad+)",
                     "RUM (none→FT→SalUn)"]


def make_quickstart_like(root, seed=2):
    """The quickstart's runs (one seed; mem low, mid, high of n=90 and a mix of 77 distinct
    examples; RUM on the mix only), with hand-made accuracies."""
    root = Path(root)
    for level in ("low", "mid", "high", "mix"):
        fs, n = f"digits_mem-{level}_n90", 77 if level == "mix" else 90
        for i, (method, tag, start, hp, sam, rum) in enumerate(QUICKSTART):
            if method == "RUM" and level != "mix":
                continue
            rec = SGD_START if start == "SGD" else SAM_START
            acc = (1.0, 0.9, 0.95, 0.2) if method == "retrain" else (0.99, 0.9 + 0.005 * i, 0.94, 0.2)
            write_run(root / start, method=method, tag=tag, forget_set=fs, seed=seed, acc=acc, level=level, n=n,
                      model_name=f"{start}_model", start_recipe=rec, hparams=hp, sam=sam, rum=rum)
    return root
