"""Many small models trained at once as one batched ensemble (DESIGN.md §9).

The memorization estimator trains hundreds of copies of one small architecture, each on its own
random subset of the training split. Trained one after another, a small model spends much of its
time in per-step overhead (Python, autograd bookkeeping, the optimizer loop, kernel launches on a
GPU). Here M models are trained together: their parameters and buffers are stacked along a new
leading model dimension (``torch.func.stack_module_state``) and one call of
``vmap(grad_and_value(loss of functional_call(model, (params, buffers), x)))`` computes every
model's gradient on its own batch.

Semantics: model k is trained exactly as ``trainer.fit.fit(models[k], data, subsets[k], recipe,
seed=seeds[k])`` trains it, up to floating-point summation order:

* its batches come from its own ``torch.Generator().manual_seed(seeds[k])``: a ``randperm`` of
  its (sorted) subset at the start of every epoch, then, when ``recipe.augment``, the crop/flip
  (and, for CIFAR-100, RandAugment) draws of each batch in order, as ``utils.batches.iterate``
  draws them (``Augment.stacked``: RandAugment then runs once on all M batches together);
* all subsets have the same size, so every model takes the same number of steps per epoch (the
  last batch of an epoch is short for all of them alike);
* every model gets the gradient of its own batch-mean cross-entropy; SGD with momentum and weight
  decay (torch.optim.SGD's update, written with ``torch._foreach`` ops) runs on the stacked
  tensors: each is one tensor of shape [M, ...] and the update is elementwise, so this *is*
  per-model SGD; the learning rate is ``lr * trainer.schedule.cosine_factor(epoch)``, the
  LambdaLR of ``fit``;
* BatchNorm works: buffers are stacked like parameters, each model normalizes with its own batch
  statistics and updates its own running statistics in place (a batched in-place update of a
  batched buffer is supported by vmap).

Results match ``fit`` to float precision after a step; over many steps of a BatchNorm network at
a high learning rate the two drift apart slowly, as any two summation orders do.

When it pays. On a GPU batching wins by far (one launch per layer for all M models). On a CPU a
model whose step is already compute-bound gains little or loses (vmap turns a convolution into a
grouped convolution, slower on CPUs than M plain ones), so :func:`train_models` times one step
both ways (on copies) and takes the faster; it also falls back to one-by-one ``fit`` for SAM,
AdamW, or an architecture vmap cannot run, with a printed note.
"""
from __future__ import annotations

import contextlib
import copy
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from trainer.device import autocast, synchronize
from trainer.fit import Recipe
from trainer.schedule import cosine_factor
from trainer.step import NonFiniteLoss
from utils.batches import as_augment
from utils.data import ImageData

# Evaluation chunk: at most this many (model, example) pairs per batched forward.
EVAL_PAIRS = 16384


@contextlib.contextmanager
def _quiet_vmap_fallback():
    """Hide torch's "performance drop ... batching rule" warning: whether batching pays is
    measured (:func:`compare_step_times`), not guessed from it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        yield


class _Stacked:
    """Stacked parameters/buffers of M copies of one architecture and a stateless skeleton."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if not models:
            raise ValueError("no models to stack")
        self.models = list(models)
        params, self.buffers = stack_module_state(self.models)
        self.names = list(params)
        self.params = [params[k].detach() for k in self.names]
        # A parameter-free skeleton: functional_call swaps the stacked slices in.
        self.skeleton = copy.deepcopy(self.models[0]).to("meta")

    def __len__(self) -> int:
        return len(self.models)

    def param_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.params))

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits [M, B, C] of a batch ``x`` [B, ...] shared by all models."""
        self.skeleton.eval()

        def one(p, b, xb):
            return functional_call(self.skeleton, (p, b), (xb,))

        with _quiet_vmap_fallback():
            return vmap(one, in_dims=(0, 0, None))(self.param_dict(), self.buffers, x)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked state into the individual modules."""
        for k, m in enumerate(self.models):
            own = dict(zip(self.names, self.params))
            for name, p in m.named_parameters():
                p.copy_(own[name][k])
            for name, b in m.named_buffers():
                if name in self.buffers:
                    b.copy_(self.buffers[name][k])


class _EnsembleStep:
    """One SGD step of every model of a :class:`_Stacked` on its own batch."""

    def __init__(self, st: _Stacked, recipe: Recipe, device: torch.device) -> None:
        self.st, self.recipe = st, recipe
        self.momentum = [torch.zeros_like(p) for p in st.params]  # buf = 0.9 * 0 + d on step 1, as SGD
        skeleton = st.skeleton.train(True)

        def loss_one(p, b, xb, yb):
            with autocast(device, recipe.precision):
                out = functional_call(skeleton, (p, b), (xb,))
            out = out.float()
            return F.cross_entropy(out, yb), out

        self.grads = vmap(grad_and_value(loss_one, has_aux=True), randomness="different")

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``xb`` [M, b, ...], ``yb`` [M, b]; returns the per-model losses [M] and logits [M, b, C]."""
        with _quiet_vmap_fallback():
            grads, (loss, out) = self.grads(self.st.param_dict(), self.st.buffers, xb, yb)
        if not torch.isfinite(loss).all():
            bad = torch.nonzero(~torch.isfinite(loss)).flatten().tolist()
            raise NonFiniteLoss(f"loss is not finite for ensemble members {bad[:10]}")
        _sgd_(self.st.params, [grads[k] for k in self.st.names], self.momentum, lr=lr,
              momentum=self.recipe.momentum, weight_decay=self.recipe.weight_decay)
        return loss, out


@torch.no_grad()
def _sgd_(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor], *, lr: float,
          momentum: float, weight_decay: float) -> None:
    """torch.optim.SGD's update (no dampening, no Nesterov) on stacked tensors, in place:
    d = g + wd * p; buf = momentum * buf + d; p -= lr * buf (``grads`` are overwritten)."""
    if weight_decay != 0:
        torch._foreach_add_(grads, params, alpha=weight_decay)
    if momentum != 0:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        grads = bufs
    torch._foreach_add_(params, grads, alpha=-lr)


def auto_chunk(model: nn.Module, example: torch.Tensor, batch_size: int, *,
               budget_bytes: int | None = None, cap: int = 64) -> int:
    """How many copies of ``model`` to train together: the memory of one copy's training step
    (parameters, gradients and momentum, plus about three times the activations of a batch, measured
    with forward hooks on ``example`` [1, C, H, W]) divided into ``budget_bytes`` (default 2 GiB on
    the CPU, a quarter of the free memory on CUDA), between 1 and ``cap``."""
    if budget_bytes is None:
        budget_bytes = memory_budget(example.device)
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


def memory_budget(device: torch.device | str) -> int:
    """Bytes an ensemble chunk may use: 2 GiB on the CPU, a quarter of the free memory on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] // 4)
    return 2 << 30


def batched_wins(device: torch.device | str, t_batched: float, t_single: float) -> bool:
    """Whether to train batched given one batched step's and M single steps' seconds: always on an
    accelerator (one launch per layer for all M models), on the CPU only when not slower."""
    return torch.device(device).type != "cpu" or t_batched <= t_single


def batchable(recipe: Recipe) -> str | None:
    """None when ``recipe`` can be trained as a batched ensemble, else the reason why not."""
    if recipe.sam is not None:
        return "SAM is not batched"
    if recipe.optimizer != "sgd":
        return f"optimizer {recipe.optimizer} is not batched"
    return None


def compare_step_times(models: Sequence[nn.Module], xb: torch.Tensor, yb: torch.Tensor, recipe: Recipe,
                       device: torch.device, repeats: int = 3) -> tuple[float | None, float, str | None]:
    """Seconds of one batched step of all ``models`` and of M one-model steps, measured on copies
    after a warm-up step, alternating the two ``repeats`` times and keeping the fastest of each (a
    shared machine's noise only slows a run down); and the error when the batched step cannot run
    (then its time is None). ``xb`` [b, ...] / ``yb`` [b] is one batch, given to every model."""
    M = len(models)
    err = None
    batched_step = None
    try:
        st = _Stacked([copy.deepcopy(m) for m in models])
        step = _EnsembleStep(st, recipe, device)
        xs, ys = xb.expand(M, *xb.shape), yb.expand(M, *yb.shape)
        step(xs, ys, recipe.lr)
        with torch.no_grad():
            st.forward_eval(xb[:2])

        def batched_step():
            step(xs, ys, recipe.lr)
    except NonFiniteLoss:
        raise
    except Exception as e:  # vmap raises many kinds of errors for unsupported operations
        err = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    one = copy.deepcopy(models[0]).train()
    opt = torch.optim.SGD(one.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)

    def single_step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, recipe.precision):
            out = one(xb)
        F.cross_entropy(out.float(), yb).backward()
        opt.step()

    def timed(fn) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - t0

    single_step()
    t_b, t_s = [], []
    for _ in range(repeats):
        if batched_step is not None:
            t_b.append(timed(batched_step))
        t_s.append(timed(single_step))
    return (min(t_b) if t_b else None), M * min(t_s), err


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
    step = _EnsembleStep(st, recipe, device)
    augment = as_augment(data.augment) if recipe.augment else None
    bs = recipe.batch_size
    history: list[dict] = []
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        lr = recipe.lr * cosine_factor(epoch, recipe.epochs, recipe.warmup)  # LambdaLR: base_lr * factor
        order = _epoch_orders(gens, subs)
        loss_sum = torch.zeros(M, dtype=torch.float64, device=device)
        correct = torch.zeros(M, dtype=torch.float64, device=device)
        for start in range(0, m, bs):
            gid = order[:, start:start + bs]
            b = gid.shape[1]
            g_dev = gid.to(data.x.device)
            xb = data.x[g_dev].to(device, non_blocking=True)  # uint8 [M, b, C, H, W]
            yb = data.y[g_dev].to(device, non_blocking=True)  # [M, b]
            if augment is not None and augment.active:
                xb = augment.stacked(xb, gens)  # model k's draws from gens[k], as iterate draws them
            xb = xb.float().div_(255)
            loss, out = step(xb, yb, lr)
            loss_sum += loss.double() * b
            correct += (out.argmax(2) == yb).sum(1).double()
        loss_np = (loss_sum / m).cpu().numpy()
        acc = (correct / m).cpu().numpy()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": float(loss_np.mean()), "train_acc": float(acc.mean()),
               "train_loss_per_model": loss_np.tolist(), "train_acc_per_model": acc.tolist(),
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

    Never augmented, always float32. ``batched`` False evaluates one model after another (the fallback)."""
    device = torch.device(device)
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    M = len(models)
    st = _Stacked(models) if batched else None
    step = max(1, max_pairs // M) if batched else 512
    outs = []
    for start in range(0, len(ids_t), step):
        gid = ids_t[start:start + step].to(x.device)
        xb = x[gid].to(device, non_blocking=True).float().div_(255)
        out = st.forward_eval(xb) if st is not None else torch.stack([_eval_one(mod, xb) for mod in models])
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
                 batched: bool | None = None, log: Callable[[str], None] | None = print,
                 epoch_log: bool = False, desc: str = "ensemble") -> str:
    """Train ``models`` in place, as one batched ensemble or one by one with
    :func:`trainer.fit.fit`; returns ``"batched"`` or ``"sequential"``.

    ``batched`` None (auto): batched when there are several models, the recipe allows it, vmap
    runs the architecture, and (on the CPU) one batched step is faster than M one-model steps,
    timed on copies. True forces
    batching where possible; False forces one by one. Why it goes one by one is printed through
    ``log`` (``epoch_log`` also prints a line per epoch of a batched ensemble)."""
    from trainer.fit import fit

    device = torch.device(device)
    why = "batching disabled" if batched is False else batchable(recipe)
    if why is None and len({len(s) for s in subsets}) != 1:
        why = "subsets of different sizes"
    if why is None and batched is None and len(models) == 1:
        why = "a single model"
    if why is None:
        ids = np.asarray(subsets[0][:recipe.batch_size], dtype=np.int64)
        g = torch.as_tensor(ids).to(data.x.device)
        xb, yb = data.x[g].to(device).float().div_(255), data.y[g].to(device)
        t_b, t_s, err = compare_step_times(models, xb, yb, recipe, device)
        if err is not None:
            why = f"vmap cannot run this architecture ({err})"
        elif batched is None and not batched_wins(device, t_b, t_s):
            why = (f"on this CPU one batched step of {len(models)} models takes {1e3 * t_b:.0f} ms, "
                   f"{len(models)} single steps {1e3 * t_s:.0f} ms")
    if why is None:
        train_ensemble(models, data, subsets, seeds, recipe, device=device, log=log if epoch_log else None,
                       desc=desc)
        return "batched"
    if log is not None and len(models) > 1:
        log(f"note: training {len(models)} models one by one ({why})")
    quiet = (lambda _msg: None)
    for k, (mod, sub, seed) in enumerate(zip(models, subsets, seeds)):
        fit(mod, data, np.sort(np.asarray(sub, dtype=np.int64)), recipe, seed=int(seed), device=device,
            log=quiet, desc=f"{desc} model {k + 1}/{len(models)}")
    return "sequential"
