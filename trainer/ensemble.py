"""Many small models trained at once as one batched ensemble (DESIGN.md §9).

The memorization estimator trains hundreds of copies of one small architecture, each on its own
random subset of the training split. Trained one after another, a small model spends most of its
time in per-step overhead (Python, kernel launches, the optimizer loop), not in arithmetic. Here M
models are trained together: their parameters and buffers are stacked along a new leading model
dimension (``torch.func.stack_module_state``) and one forward runs
``vmap(functional_call(model, (params, buffers), x))`` over that dimension, so every step of all M
models is a handful of batched kernels.

Semantics: model k is trained exactly as ``trainer.fit.fit(models[k], data, subsets[k], recipe,
seed=seeds[k])`` trains it, up to floating-point summation order:

* its batches come from its own ``torch.Generator().manual_seed(seeds[k])``: a ``randperm`` of
  its (sorted) subset at the start of every epoch, then, when ``recipe.augment``, the crop/flip
  draws of each batch in order, as ``utils.batches.iterate`` draws them;
* all subsets have the same size, so every model takes the same number of steps per epoch (the
  last batch of an epoch is short for all of them alike);
* SGD with momentum and weight decay runs on the stacked leaves: each stacked parameter is one
  tensor of shape [M, ...] and SGD's update is elementwise, so this *is* per-model SGD; the loss
  is the sum over models of each model's batch-mean cross-entropy, so model k's gradient is the
  gradient of its own loss; the learning rate follows ``trainer.schedule.cosine_with_warmup``
  stepped per epoch;
* BatchNorm works: buffers are stacked like parameters, each model normalizes with its own batch
  statistics and updates its own running statistics in place (a batched in-place update of a
  batched buffer is supported by vmap).

Only plain SGD is batched. SAM, AdamW, or an architecture whose forward vmap cannot run (a probe
step on a copy finds out) falls back to :func:`trainer.fit.fit` one model after another, with a
printed note; :func:`train_models` makes that choice.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from trainer.device import autocast
from trainer.fit import Recipe
from trainer.schedule import cosine_with_warmup
from trainer.step import NonFiniteLoss
from utils.batches import augment_batch
from utils.data import ImageData

# Evaluation chunk: at most this many (model, example) pairs per batched forward.
EVAL_PAIRS = 16384


class _Stacked:
    """Stacked parameters/buffers of M copies of one architecture and a stateless skeleton."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if not models:
            raise ValueError("no models to stack")
        self.models = list(models)
        self.params, self.buffers = stack_module_state(self.models)
        # A parameter-free skeleton: functional_call swaps the stacked slices in.
        self.skeleton = copy.deepcopy(self.models[0]).to("meta")

    def __len__(self) -> int:
        return len(self.models)

    def forward(self, x: torch.Tensor, *, train: bool, shared_input: bool = False) -> torch.Tensor:
        """Logits [M, B, C] of ``x`` ([M, B, ...] per model, or [B, ...] shared by all)."""
        self.skeleton.train(train)

        def one(p, b, xb):
            return functional_call(self.skeleton, (p, b), (xb,))

        return vmap(one, in_dims=(0, 0, None if shared_input else 0), randomness="different")(
            self.params, self.buffers, x)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked state into the individual modules."""
        for k, m in enumerate(self.models):
            for name, p in m.named_parameters():
                p.copy_(self.params[name][k])
            for name, b in m.named_buffers():
                if name in self.buffers:
                    b.copy_(self.buffers[name][k])


def auto_chunk(model: nn.Module, example: torch.Tensor, batch_size: int, *,
               budget_bytes: int | None = None, cap: int = 64) -> int:
    """How many copies of ``model`` to train together: the memory of one copy's training step
    (parameters, gradients and momentum, plus about three times the activations of a batch, measured
    with forward hooks on ``example`` [1, C, H, W]) divided into ``budget_bytes`` (default 2 GiB on
    the CPU, a quarter of the free memory on CUDA), between 1 and ``cap``."""
    if budget_bytes is None:
        budget_bytes = 2 << 30
        if example.device.type == "cuda":
            budget_bytes = int(torch.cuda.mem_get_info(example.device)[0] // 4)
    numel = [0]

    def hook(_m, _inp, out):
        if isinstance(out, torch.Tensor):
            numel[0] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    params = sum(p.numel() for p in model.parameters())
    per_model = 4 * (3 * params + 3 * numel[0] * int(batch_size))
    return int(max(1, min(cap, budget_bytes // max(per_model, 1))))


def batchable(recipe: Recipe) -> str | None:
    """None when ``recipe`` can be trained as a batched ensemble, else the reason why not."""
    if recipe.sam is not None:
        return "SAM is not batched"
    if recipe.optimizer != "sgd":
        return f"optimizer {recipe.optimizer} is not batched"
    return None


def probe(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> str | None:
    """Run one batched forward/backward on copies of (at most two of) ``models``; None when it
    works, else the error (the models themselves are not touched)."""
    try:
        st = _Stacked([copy.deepcopy(m) for m in models[:2]])
        xb = x[:2].unsqueeze(0).expand(len(st), *x[:2].shape)
        out = st.forward(xb, train=True)
        F.cross_entropy(out.flatten(0, 1).float(), y[:2].repeat(len(st))).backward()
        with torch.no_grad():
            st.forward(x[:2], train=False, shared_input=True)
        return None
    except Exception as e:  # vmap raises many kinds of errors for unsupported operations
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _epoch_orders(gens: Sequence[torch.Generator], subsets: torch.Tensor) -> torch.Tensor:
    """[M, m] global ids in each model's order for this epoch (``iterate``'s ``randperm``)."""
    m = subsets.shape[1]
    return torch.stack([subsets[k][torch.randperm(m, generator=g)] for k, g in enumerate(gens)])


def train_ensemble(models: Sequence[nn.Module], data: ImageData, subsets: Sequence[np.ndarray],
                   seeds: Sequence[int], recipe: Recipe, *, device: torch.device | str = "cpu",
                   log: Callable[[str], None] | None = print, desc: str = "ensemble") -> list[dict]:
    """Train ``models`` (copies of one architecture, already on ``device``) together, in place.

    ``subsets[k]`` are the global ids model k trains on (all of the same length), ``seeds[k]`` the
    seed of its batch generator. ``data`` must live on ``device`` (``ImageData.to``). Returns the
    per-epoch history (mean over models of the loss and accuracy; per-model values too).
    """
    device = torch.device(device)
    why = batchable(recipe)
    if why is not None:
        raise ValueError(f"recipe cannot be batched: {why}")
    M = len(models)
    if len(subsets) != M or len(seeds) != M:
        raise ValueError(f"{M} models but {len(subsets)} subsets and {len(seeds)} seeds")
    sizes = {len(s) for s in subsets}
    if len(sizes) != 1:
        raise ValueError(f"all subsets must have the same size, got sizes {sorted(sizes)}")
    m = sizes.pop()
    if m == 0:
        raise ValueError("empty subsets")
    subs = torch.as_tensor(np.stack([np.sort(np.asarray(s, dtype=np.int64)) for s in subsets]))
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    for mod in models:
        mod.train()
    st = _Stacked(models)
    leaves = list(st.params.values())
    opt = torch.optim.SGD(leaves, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    sched = cosine_with_warmup(opt, recipe.epochs, recipe.warmup)
    augment = data.augment if recipe.augment else None
    bs = recipe.batch_size
    history: list[dict] = []
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        order = _epoch_orders(gens, subs)
        loss_sum = torch.zeros(M, dtype=torch.float64, device=device)
        correct = torch.zeros(M, dtype=torch.float64, device=device)
        for start in range(0, m, bs):
            gid = order[:, start:start + bs]
            b = gid.shape[1]
            g_dev = gid.to(data.x.device)
            xb = data.x[g_dev].to(device, non_blocking=True).float().div_(255)  # [M, b, C, H, W]
            yb = data.y[g_dev].to(device, non_blocking=True)  # [M, b]
            if augment is not None and (augment[0] > 0 or augment[1]):
                xb = torch.stack([augment_batch(xb[k], augment[0], augment[1], gens[k]) for k in range(M)])
            with autocast(device):
                out = st.forward(xb, train=True)
            out = out.float()
            per = F.cross_entropy(out.reshape(M * b, -1), yb.reshape(-1), reduction="none").view(M, b).mean(1)
            if not torch.isfinite(per.detach()).all():
                bad = torch.nonzero(~torch.isfinite(per.detach())).flatten().tolist()
                raise NonFiniteLoss(f"loss is not finite for ensemble members {bad[:10]}")
            opt.zero_grad(set_to_none=True)
            per.sum().backward()
            opt.step()
            loss_sum += per.detach().double() * b
            correct += (out.detach().argmax(2) == yb).sum(1).double()
        sched.step()
        loss = (loss_sum / m).cpu().numpy()
        acc = (correct / m).cpu().numpy()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": float(loss.mean()), "train_acc": float(acc.mean()),
               "train_loss_per_model": loss.tolist(), "train_acc_per_model": acc.tolist(),
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if log is not None:
            log(f"{desc} epoch {epoch + 1}/{recipe.epochs} lr {lr:.4g} mean loss {row['train_loss']:.4f} "
                f"mean train acc {100 * row['train_acc']:.2f}% ({M} models, {row['seconds']:.1f}s)")
    st.write_back()
    return history


@torch.no_grad()
def predict_ensemble(models: Sequence[nn.Module], x: torch.Tensor, ids: np.ndarray, *,
                     device: torch.device | str = "cpu", batched: bool = True,
                     max_pairs: int = EVAL_PAIRS) -> torch.Tensor:
    """Eval-mode logits [M, n, C] (float32, CPU) of every model on the images ``x[ids]``.

    Never augmented. ``batched`` False evaluates one model after another (the fallback)."""
    device = torch.device(device)
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    M = len(models)
    outs = []
    if batched:
        st = _Stacked(models)
        step = max(1, max_pairs // M)
    else:
        step = 512
    for start in range(0, len(ids_t), step):
        gid = ids_t[start:start + step].to(x.device)
        xb = x[gid].to(device, non_blocking=True).float().div_(255)
        with autocast(device):
            if batched:
                out = st.forward(xb, train=False, shared_input=True)
            else:
                out = torch.stack([_eval_one(mod, xb) for mod in models])
        outs.append(out.float().cpu())
    if not outs:
        n_out = getattr(getattr(models[0], "fc", None), "out_features", 0)
        return torch.zeros(M, 0, n_out)
    return torch.cat(outs, dim=1)


def _eval_one(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    out = model(x)
    model.train(was)
    return out


def correctness(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, ids: np.ndarray, *,
                device: torch.device | str = "cpu", batched: bool = True) -> np.ndarray:
    """bool [M, n]: whether model k classifies image ``ids[j]`` of ``x``/``y`` correctly."""
    logits = predict_ensemble(models, x, ids, device=device, batched=batched)
    labels = y.cpu()[torch.as_tensor(np.asarray(ids, dtype=np.int64))]
    return (logits.argmax(2) == labels[None]).numpy()


def train_models(models: Sequence[nn.Module], data: ImageData, subsets: Sequence[np.ndarray],
                 seeds: Sequence[int], recipe: Recipe, *, device: torch.device | str = "cpu",
                 batched: bool = True, log: Callable[[str], None] | None = print,
                 epoch_log: bool = False, desc: str = "ensemble") -> str:
    """Train ``models`` as one batched ensemble when possible, else one by one with
    :func:`trainer.fit.fit` (printing why through ``log``; ``epoch_log`` also prints a line per
    epoch of the batched ensemble). Returns ``"batched"`` or ``"sequential"``."""
    from trainer.fit import fit

    device = torch.device(device)
    why = None if batched else "batching disabled"
    if why is None:
        why = batchable(recipe)
    if why is None and len({len(s) for s in subsets}) != 1:
        why = "subsets of different sizes"
    if why is None:
        ids = np.asarray(subsets[0][:2], dtype=np.int64)
        g = torch.as_tensor(ids).to(data.x.device)
        why = probe(models, data.x[g].to(device).float().div_(255), data.y[g].to(device))
        if why is not None:
            why = f"vmap cannot run this architecture ({why})"
    if why is None:
        train_ensemble(models, data, subsets, seeds, recipe, device=device, log=log if epoch_log else None,
                       desc=desc)
        return "batched"
    if log is not None:
        log(f"note: training {len(models)} models one by one ({why})")
    quiet = (lambda _msg: None)
    for k, (mod, sub, seed) in enumerate(zip(models, subsets, seeds)):
        fit(mod, data, np.sort(np.asarray(sub, dtype=np.int64)), recipe, seed=int(seed), device=device,
            log=quiet, desc=f"{desc} model {k + 1}/{len(models)}")
    return "sequential"

