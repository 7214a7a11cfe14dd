"""utils/batches.py: whole-batch augmentation (random crop with zero padding, horizontal flip) and
batches drawn by global id (DESIGN.md §3)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.batches import augment_batch, iterate, num_batches


def _windows(img: torch.Tensor, pad: int) -> dict[tuple[int, int], torch.Tensor]:
    """Every crop of the zero-padded image, by (row offset, column offset) into the padded image."""
    c, h, w = img.shape
    p = F.pad(img, (pad, pad, pad, pad))
    return {(dy, dx): p[:, dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}


def _which(out: torch.Tensor, img: torch.Tensor, pad: int, flip: bool) -> list[tuple[int, int, bool]]:
    found = []
    for (dy, dx), win in _windows(img, pad).items():
        if torch.equal(out, win):
            found.append((dy, dx, False))
        if flip and torch.equal(out, win.flip(-1)):
            found.append((dy, dx, True))
    return found


def test_crop_of_one_image_by_hand():
    # 1 image, 1 channel, 3x3, values 1..9, pad 1: the padded image is
    #   0 0 0 0 0
    #   0 1 2 3 0
    #   0 4 5 6 0
    #   0 7 8 9 0
    #   0 0 0 0 0
    # and the 3x3 crop at padded offset (dy, dx) is rows dy..dy+2, columns dx..dx+2 of it.
    img = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)
    padded = [[0, 0, 0, 0, 0], [0, 1, 2, 3, 0], [0, 4, 5, 6, 0], [0, 7, 8, 9, 0], [0, 0, 0, 0, 0]]
    by_hand = {(dy, dx): torch.tensor([[r[dx:dx + 3] for r in padded[dy:dy + 3]]], dtype=torch.float32)
               for dy in range(3) for dx in range(3)}
    assert torch.equal(by_hand[(0, 0)], torch.tensor([[[0., 0, 0], [0, 1, 2], [0, 4, 5]]]))
    assert torch.equal(by_hand[(2, 1)], torch.tensor([[[4., 5, 6], [7, 8, 9], [0, 0, 0]]]))
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        out = augment_batch(img, 1, False, g)[0]
        hits = [k for k, v in by_hand.items() if torch.equal(out, v)]
        assert len(hits) == 1, out
        seen.add(hits[0])
    assert seen == set(by_hand)  # all 9 offsets occur


@pytest.mark.parametrize("pad,flip", [(4, True), (4, False), (1, False), (0, True), (2, True)])
def test_every_image_is_a_window_of_its_padded_self(pad, flip):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 8, 8, generator=g)
    out = augment_batch(x, pad, flip, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets, flips = set(), set()
    for i in range(len(x)):
        hits = _which(out[i], x[i], pad, flip)
        assert len(hits) == 1, (i, hits)  # random pixels: exactly one window (and flip) matches
        offsets.add(hits[0][:2])
        flips.add(hits[0][2])
    assert flips == ({False, True} if flip else {False})
    if pad:
        assert len(offsets) > 1  # offsets drawn per image
    else:
        assert offsets == {(0, 0)}


def test_crops_independent_per_image_and_channels_move_together():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(32, 3, 32, 32, generator=g)
    out = augment_batch(x, 4, True, torch.Generator().manual_seed(3))
    rows = set()
    for i in range(len(x)):
        (dy, dx, fl), = _which(out[i], x[i], 4, True)  # one offset for all three channels
        rows.add((dy, dx, fl))
    assert len(rows) > 16


def test_augment_deterministic_with_seeded_generator():
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    a = augment_batch(x, 4, True, torch.Generator().manual_seed(42))
    b = augment_batch(x, 4, True, torch.Generator().manual_seed(42))
    c = augment_batch(x, 4, True, torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_alone():
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, 0, True, torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 5 < sum(flipped) < 35


def _data(n=50):
    x = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 7
    return x, y


def test_iterate_by_global_id():
    x, y = _data()
    ids = np.array([3, 10, 11, 20, 40, 41, 49])
    batches = list(iterate(x, y, ids, 3))
    assert [len(b.y) for b in batches] == [3, 3, 1] == [len(b.ids) for b in batches]
    assert num_batches(len(ids), 3) == 3 and num_batches(len(ids), 3, drop_last=True) == 2
    got = torch.cat([b.ids for b in batches])
    assert got.tolist() == ids.tolist()
    for b in batches:
        assert b.x.dtype == torch.float32
        assert torch.equal(b.x, x[b.ids].float() / 255) and torch.equal(b.y, y[b.ids])


def test_iterate_shuffle_covers_every_id_once_and_is_reproducible():
    x, y = _data()
    ids = np.arange(5, 45)

    def epoch(seed, **kw):
        return list(iterate(x, y, ids, 8, shuffle=True, generator=torch.Generator().manual_seed(seed), **kw))

    a, b, c = epoch(0), epoch(0), epoch(1)
    order = torch.cat([t.ids for t in a])
    assert sorted(order.tolist()) == ids.tolist() and order.tolist() != ids.tolist()
    assert order.tolist() == torch.cat([t.ids for t in b]).tolist()
    assert order.tolist() != torch.cat([t.ids for t in c]).tolist()
    dropped = epoch(0, drop_last=True)
    assert all(len(t.y) == 8 for t in dropped) and len(dropped) == 5
    aug1, aug2 = epoch(3, augment=(1, True)), epoch(3, augment=(1, True))
    assert all(torch.equal(s.x, t.x) for s, t in zip(aug1, aug2))
    assert any(not torch.equal(s.x, x[s.ids].float() / 255) for s in aug1)


def test_iterate_label_override_is_positional():
    x, y = _data()
    ids = np.array([4, 9, 30, 31])
    new = torch.tensor([6, 5, 4, 3])
    out = list(iterate(x, y, ids, 4, shuffle=True, generator=torch.Generator().manual_seed(0), labels=new))[0]
    lookup = dict(zip(ids.tolist(), new.tolist()))
    assert out.y.tolist() == [lookup[i] for i in out.ids.tolist()]
