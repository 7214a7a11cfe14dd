"""Whole-process pretraining time: ``main_train.py`` (ours) against a loop in the original code's style,
both from the same CIFAR-10 files on disk to a saved model, in one process, for 1 and 5 epochs.

    python bench/bench_process.py                                   # CPU, 5,000 images, resnet18
    python bench/bench_process.py --device cuda --per_file 10000    # GPU, the full 50,000-image size
    python bench/bench_process.py --per_file 20 --n_test 20 --arch mlp --epochs 1   # smoke run

Data: synthetic CIFAR-10 with learnable classes (bench/synthetic.py) written in torchvision's
layout (``--per_file`` images in each of the 5 training files, ``--n_test`` test images) into a
temporary directory (or ``--data``), read by both sides.

OURS      ``main_train.main([...])`` in this process: load_data (whole uint8 arrays), the trainer
          (batches by index, whole-batch crop + flip on the device, channels_last, per-epoch
          validation accuracy, an atomic checkpoint per epoch), then the post-training pass
          (per-example float32 logits on train, val and test: outputs.npz), proxies.npz, model.pt.
BASELINE  the original main_train.py's flow (upstream-spec §3): torchvision ``CIFAR10`` datasets
          (PIL per image, RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor), the 10% per-class
          validation split (a copy of the training set, with its augmentation, as the original's),
          ``DataLoader(num_workers=--baseline_workers)``, per epoch ``train()`` (plain
          zero_grad/backward/step with per-batch ``loss.item()`` and accuracy) then ``validate(val)``,
          CosineAnnealingLR, a checkpoint every even epoch and at the end; and as its post-training
          evaluation one ``validate`` on the test set (eval transform). No per-example outputs.

Both use SGD(lr 0.1, momentum 0.9, wd 5e-4), batch --batch_size, fp32 on the CPU (ours: --precision),
the same seed for the initialization. Printed: seconds end to end per side and epochs, ours' split
into training (metrics.json train_seconds) and the rest (loading, post-training pass, files).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_train import machine  # noqa: E402
from bench.synthetic import CLASSES, write_cifar10  # noqa: E402
from models import build_model  # noqa: E402
from trainer.device import synchronize  # noqa: E402
from utils.data import NORMALIZATION, validation_split  # noqa: E402


def run_ours(args, root: Path, out: Path, epochs: int, compile: bool = False) -> dict:
    """main_train.py in this process; seconds end to end and its own record."""
    import main_train

    argv = ["--dataset", "cifar10", "--data", str(root), "--arch", args.arch, "--epochs", str(epochs),
            "--batch_size", str(args.batch_size), "--lr", "0.1", "--device", args.device, "--precision",
            args.precision, "--save_dir", str(out), "--overwrite", *(["--compile"] if compile else [])]
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = main_train.main(argv)
    synchronize(torch.device(args.device))
    total = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"main_train.py {' '.join(argv)} failed ({code}):\n{buf.getvalue()[-2000:]}")
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    m = json.loads((run / "metrics.json").read_text())
    with np.load(run / "outputs.npz") as z:
        assert z["test_logits"].dtype == np.float32
    return {"total": total, "train": m["train_seconds"], "test_acc": m["test_acc"],
            "notes": [ln for ln in buf.getvalue().splitlines() if ln.startswith("--compile")]}


# --- the original code's style -------------------------------------------------------------------

def _cifar10_class():
    from torchvision.datasets import CIFAR10

    class SyntheticCIFAR10(CIFAR10):
        """torchvision's CIFAR10 without the md5 checks (the files are synthetic)."""

        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = list(CLASSES)
            self.class_to_idx = {c: i for i, c in enumerate(CLASSES)}

    return SyntheticCIFAR10


def baseline_loaders(args, root: Path):
    from torchvision import transforms

    cifar = _cifar10_class()
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor()])
    full = cifar(str(root / "cifar10"), train=True, transform=train_tf)
    test = cifar(str(root / "cifar10"), train=False, transform=transforms.ToTensor())
    train_ids, val_ids = validation_split(np.asarray(full.targets), 1)
    sub = torch.utils.data.Subset
    kw = dict(batch_size=args.batch_size, num_workers=args.baseline_workers,
              pin_memory=torch.device(args.device).type == "cuda")
    return (torch.utils.data.DataLoader(sub(full, train_ids.tolist()), shuffle=True, **kw),
            torch.utils.data.DataLoader(sub(full, val_ids.tolist()), shuffle=False, **kw),  # the original's quirk
            torch.utils.data.DataLoader(test, shuffle=False, **kw))


def baseline_train(model, opt, loader, device) -> float:
    model.train()
    correct = seen = 0
    for image, target in loader:
        image, target = image.to(device), target.to(device)
        output = model(image)
        loss = F.cross_entropy(output, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _ = loss.float().item()
        correct += (output.argmax(1) == target).sum().item()
        seen += len(target)
    return correct / max(seen, 1)


@torch.no_grad()
def baseline_validate(model, loader, device) -> float:
    model.eval()
    correct = seen = 0
    for image, target in loader:
        image, target = image.to(device), target.to(device)
        output = model(image)
        _ = F.cross_entropy(output, target).item()
        correct += (output.argmax(1) == target).sum().item()
        seen += len(target)
    return correct / max(seen, 1)


def run_baseline(args, root: Path, out: Path, epochs: int) -> dict:
    device = torch.device(args.device)
    t0 = time.perf_counter()
    train_loader, val_loader, test_loader = baseline_loaders(args, root)
    torch.manual_seed(2)
    mean, std = NORMALIZATION["cifar10"]
    model = build_model(args.arch, 10, mean=mean, std=std).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    out.mkdir(parents=True, exist_ok=True)
    t_train = time.perf_counter()
    for epoch in range(epochs):
        baseline_train(model, opt, train_loader, device)
        baseline_validate(model, val_loader, device)
        sched.step()
        if epoch % 2 == 0:
            torch.save({"epoch": epoch + 1, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict()}, out / "checkpoint_latest")
    synchronize(device)
    t_train = time.perf_counter() - t_train
    torch.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
               out / "checkpoint_final")
    test_acc = baseline_validate(model, test_loader, device)
    synchronize(device)
    return {"total": time.perf_counter() - t0, "train": t_train, "test_acc": test_acc, "notes": []}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", default="1,5", help="comma list of epoch counts")
    p.add_argument("--per_file", type=int, default=1000, help="images per training file (5 files; 10000 = full)")
    p.add_argument("--n_test", type=int, default=1000, help="test images")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="ours: --precision (auto | fp32 | bf16)")
    p.add_argument("--compile", action="store_true", help="also ours with --compile")
    p.add_argument("--baseline_workers", type=int, default=0, help="baseline DataLoader workers (the original: 0)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data", default=None, help="write/read the synthetic CIFAR-10 here (default: a temporary dir)")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    args.epochs = [int(e) for e in str(args.epochs).split(",") if e.strip()]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_process_"))
    try:
        root = Path(args.data) if args.data else tmp / "datasets"
        if not (root / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file():
            write_cifar10(root, args.per_file, args.n_test)
        n = 5 * args.per_file
        warm = write_cifar10(tmp / "warmup", 8, 8, seed=7)  # imports, kernels, first-call costs: untimed
        run_ours(args, warm, tmp / "warm_ours", 1)
        run_baseline(args, warm, tmp / "warm_base", 1)
        print(f"# whole process, {args.arch} on synthetic CIFAR-10 ({n} training images incl. 10% val, "
              f"{args.n_test} test), batch {args.batch_size}, device {args.device}; {machine(torch.device(args.device))}")
        print("| epochs | side | seconds end to end | training | rest (load, eval, files) | test acc |\n"
              "|---|---|---|---|---|---|")
        results = []
        for epochs in args.epochs:
            sides = [("ours", lambda: run_ours(args, root, tmp / f"ours{epochs}", epochs))]
            if args.compile:
                sides.append(("ours --compile", lambda: run_ours(args, root, tmp / f"comp{epochs}", epochs, True)))
            sides.append(("baseline", lambda: run_baseline(args, root, tmp / f"base{epochs}", epochs)))
            row = {"epochs": epochs}
            for name, fn in sides:
                r = fn()
                row[name] = r
                print(f"| {epochs} | {name} | {r['total']:.1f} | {r['train']:.1f} | {r['total'] - r['train']:.1f} | "
                      f"{100 * r['test_acc']:.1f}% |" + (f" {r['notes'][0]}" if r["notes"] else ""), flush=True)
            print(f"| {epochs} | baseline / ours | {row['baseline']['total'] / row['ours']['total']:.2f}x | "
                  f"{row['baseline']['train'] / row['ours']['train']:.2f}x | | |", flush=True)
            results.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
