"""``analysis.py --es``: the entanglement score of a forget set within its retain set under a model.

The forget set comes from the same flags as main_forget.py's (built and saved under
``<ckpts>/forget_sets`` if absent); embeddings are :func:`trainer.evaluate.embed` (float32, the same
function main_forget.py --es uses). ES is RUM's (rum-spec §4); ``--es_normalized`` reports the
sharp-unlearn variant (upstream-spec §7.5). Writes ``<out or ckpts/analysis>/es.json``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from evaluation.entanglement import entanglement_score, entanglement_score_normalized
from forget_sets.file import sha256_file
from forget_sets.store import build_forget_set
from models import build_for, load_into
from results.render import json_num as _jnum
from stages.configs import device as device_of, forget_spec, resolve_start_model
from trainer.device import prepare_model
from trainer.evaluate import embed
from utils.data import load_data
from utils import paths
from utils.errors import UserError
from utils.io import atomic_write_json

__all__ = ["run"]


def _forget_set_for_es(args: argparse.Namespace, data, model_file: Path, device) -> tuple[Any, str, str]:
    """(ForgetSet, its name, its file) from the shared builder: ``--forget_set FILE`` as is, else
    the forget set the flags select (built and saved under ``<ckpts>/forget_sets`` if absent)."""
    fs, path = build_forget_set(forget_spec(args, start_model=model_file), data, device=device)
    return fs, str(fs.manifest.get("name") or Path(path).stem), str(path)


def run(args: argparse.Namespace) -> int:
    """``analysis.py --es``: ES of a forget set within its retain set under a model
    (RUM's score; ``--es_normalized``: the sharp-unlearn variant)."""
    device = device_of(args)
    out_dir = Path(args.out) if args.out else paths.analysis_dir(args.ckpts)
    model_file = resolve_start_model(args)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    fs, fs_name, fs_file = _forget_set_for_es(args, data, model_file, device)
    if len(fs.forget_ids) == 0 or len(fs.retain_ids) == 0:
        raise UserError(f"forget set {fs_name}: the forget and retain sets must both be non-empty")
    model = build_for(args.arch, data, imagenet_arch=args.imagenet_arch)
    load_into(model, model_file, arch=args.arch, num_classes=data.num_classes)
    model = prepare_model(model, device)
    bs = max(int(args.batch_size), 512)
    emb_r = embed(model, data, fs.retain_ids, device=device, batch_size=bs)
    emb_f = embed(model, data, fs.forget_ids, device=device, batch_size=bs)
    es = entanglement_score(emb_r, emb_f)
    es_norm = entanglement_score_normalized(emb_r, emb_f)
    variant = "normalized" if args.es_normalized else "rum"
    value = es_norm if args.es_normalized else es
    label = "ES (normalized, sharp-unlearn)" if args.es_normalized else "ES"
    print(f"{label} of forget set {fs_name} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain) "
          f"under {model_file}: {value:.6g}")
    result = {
        "es": _jnum(float(value)), "variant": variant, "es_rum": _jnum(float(es)),
        "es_normalized": _jnum(float(es_norm)), "forget_set": fs_name, "forget_set_file": fs_file,
        "forget_set_sha256": sha256_file(fs_file), "model_file": str(model_file),
        "dataset": data.name, "arch": args.arch, "num_forget": int(len(fs.forget_ids)),
        "num_retain": int(len(fs.retain_ids)), "embed_dim": int(emb_r.shape[1]), "device": str(device),
    }
    try:
        atomic_write_json(out_dir / "es.json", result)
    except OSError as e:
        raise UserError(f"--out {out_dir}: cannot write es.json ({e.strerror or e})") from None
    print(f"wrote {out_dir / 'es.json'}")
    return 0


