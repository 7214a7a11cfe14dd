"""RUM with a memorization proxy instead of true scores (rum-spec §1.2-1.4, §3).

    python main_rum_proxy.py --unlearn {METHOD} --mem mix --num_indexes_to_replace 3000 \
        --dataset {DATASET} --arch {ARCHITECTURE} --epochs {ORIGINAL_MODEL_EPOCHS} --lr 0.1 --batch_size 256
    python main_rum_proxy.py --mem mix --num_indexes_to_replace 3000 ... [--mem_proxy confidence|max_conf|entropy|bi_acc|ho_ret|curvature]

The pipeline of main_rum.py with one difference: the forget set is split by ``--mem_proxy NAME``
(default ``confidence``, which the README command implies: it names no proxy), read from
``--proxy_file``, else where the proxy's producer writes it (the learning-event proxies: the
pretrained run's ``proxies.npz``; ho_ret/curvature: ``<ckpts>/memorization/<dataset>_<arch>_proxies.npz``).
Proxies that fall as memorization rises (confidence, max_conf, entropy, bi_acc) are flipped, so the
groups are still processed low -> high memorization: the highest-confidence group first.
``--mem_proxy`` chooses the grouping only; the forget set is the one main_forget.py builds from the
other flags (``--mem mix``: by true scores), so RUM-with-proxy, RUM and the single methods share the
forget set and its retrain reference. Default plan (no --rum_methods, no --unlearn): NegGrad+ (NG)
three times, alpha 0.99/0.97/0.97, epochs 5/5/10, lr 0.01/0.01/0.001.
See main_rum.py and docs/stage_rum.md.
"""
from __future__ import annotations

from main_rum import rum_main
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return rum_main("main_rum_proxy.py", "proxy", argv)


if __name__ == "__main__":
    run_main(main)
