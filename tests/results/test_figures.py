"""results/membins.py (forget accuracy and MIA-efficacy by memorization score, from each run's
outputs.npz and the score file its forget set names) and results/figures.py (the figures; skipped
without matplotlib)."""
import json

import numpy as np
import pytest

from evaluation.mia import forget_mia_efficacy
from fake_runs import analyse, make_fake_runs, write_run
from forget_sets.file import make_forget_set, save_forget_set, sha256_file
from results.membins import mem_bins
from results.runs import discover
from results.table import METRICS, build_report

N_TRAIN = 50
FORGET = np.arange(0, N_TRAIN, 5)  # 10 forget examples, scores 0.01, 0.11, ..., 0.91
SCORES = (np.arange(N_TRAIN) + 0.5) / 50.0


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _outputs(rng, wrong):
    """outputs.npz arrays: 40 retain, 30 test, the 10 forget examples (``wrong`` of them misclassified)."""
    retain = np.setdiff1d(np.arange(N_TRAIN), FORGET)
    out = {}
    for name, ids, noise in (("retain", retain, 1.0), ("test", np.arange(30), 2.0), ("forget", FORGET, 1.5)):
        labels = rng.integers(0, 3, len(ids))
        logits = rng.normal(0, noise, (len(ids), 3)).astype(np.float32)
        logits[np.arange(len(ids)), labels] += 2.0
        if name == "forget":  # correct by a wide margin, except ``wrong``
            logits[np.arange(len(ids)), labels] += 6.0
            bad = np.isin(np.arange(len(ids)), wrong)
            logits[bad, labels[bad]] = -5.0
        out.update({f"{name}_ids": ids, f"{name}_logits": logits, f"{name}_labels": labels})
    return out


def _mem_runs(tmp_path):
    ckpts = tmp_path / "ckpts"
    (ckpts / "memorization").mkdir(parents=True)
    score_file = ckpts / "memorization" / "digits_memorization.npz"
    np.savez(score_file, memorization=SCORES)
    fs = make_forget_set(np.arange(N_TRAIN), FORGET, {"dataset": "digits", "kind": "mem", "level": "mix", "n": 10,
                                                      "eval_score_file": score_file.name,
                                                      "eval_score_sha256": sha256_file(score_file)})
    fs_file = ckpts / "forget_sets" / "digits_mem-mix_n10.npz"
    save_forget_set(fs_file, fs)
    rng = np.random.default_rng(0)
    outs = {}
    for method, wrong in (("retrain", [7, 8, 9]), ("FT", [9])):
        d = write_run(ckpts / "unlearn", method=method, tag=method, forget_set="digits_mem-mix_n10", seed=1,
                      acc=(1, 1 - len(wrong) / 10, 0.9, 0.3), level="mix", n=10, fs_file=str(fs_file))
        outs[method] = _outputs(rng, wrong)
        np.savez(d / "outputs.npz", **outs[method])
    return ckpts, outs


def test_mem_bins_by_hand(tmp_path):
    ckpts, outs = _mem_runs(tmp_path)
    runs, _ = discover(ckpts / "unlearn")
    rep = build_report(runs, METRICS["tow"])
    res = mem_bins(rep, [tmp_path / "elsewhere"], bins=5)  # the score file is found beside the forget set
    assert res.notes == [] and res.score_files == [str(ckpts / "memorization" / "digits_memorization.npz")]
    assert [c.label for c in res.curves] == ["FT", "Retrain"] and res.curves[1].reference
    ft = res.curves[0]
    # scores .01, .11, ..., .91: two per bin of width 0.2; FT misclassifies the last forget example (.91)
    assert ft.counts.tolist() == [2, 2, 2, 2, 2]
    assert ft.forget_acc.tolist() == [1, 1, 1, 1, 0.5]
    assert res.curves[1].forget_acc.tolist() == [1, 1, 1, 0.5, 0]
    # the per-example attack is the evaluation's: its mean is forget_mia_efficacy's confidence value
    o = outs["FT"]
    expect = forget_mia_efficacy(_softmax(o["retain_logits"].astype(np.float64)), o["retain_labels"],
                                 _softmax(o["test_logits"].astype(np.float64)), o["test_labels"],
                                 _softmax(o["forget_logits"].astype(np.float64)), o["forget_labels"], seed=1)
    assert np.mean(ft.mia) == pytest.approx(expect["confidence"], abs=1e-12)
    assert json.loads(json.dumps(res.as_json()))["curves"][0]["counts"] == [2, 2, 2, 2, 2]


def test_mem_bins_without_scores_skips_with_a_note(tmp_path):
    ckpts, _ = _mem_runs(tmp_path)
    (ckpts / "memorization" / "digits_memorization.npz").unlink()
    runs, _ = discover(ckpts / "unlearn")
    res = mem_bins(build_report(runs, METRICS["tow"]), [ckpts])
    assert res.curves == [] and len(res.notes) == 1 and "digits_memorization.npz" in res.notes[0]
    assert "not found" in res.notes[0]


def test_figures_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    ckpts, _ = _mem_runs(tmp_path)
    analyse(ckpts / "unlearn", tmp_path / "out", "--ckpts", str(ckpts))
    for name in ("tow.png", "tow.pdf", "forget_by_mem.png", "forget_by_mem.pdf", "forget_by_mem.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert (tmp_path / "out" / "tow.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "forget_by_mem.pdf").read_bytes()[:5] == b"%PDF-"
    # analysis_mia.py draws its ToW-MIA figure, not the memorization-score one
    analyse(ckpts / "unlearn", tmp_path / "mia", "--ckpts", str(ckpts), metric="tow_mia")
    assert (tmp_path / "mia" / "tow_mia.pdf").is_file() and not (tmp_path / "mia" / "forget_by_mem.png").exists()


def test_levels_figure_two_start_models(tmp_path):
    pytest.importorskip("matplotlib")
    from results.figures import plot_levels

    root = make_fake_runs(tmp_path / "runs", with_cifar=False)
    sam = {"key": {"sam": 1}, "label": "SAM"}
    for method in ("retrain", "FT"):
        write_run(root / "sam", method=method, tag=method, forget_set="digits_mem-low_n60", seed=1,
                  acc=(1, 0.9, 0.9, 0.2), level="low", model_name="sam", start_recipe=sam)
    runs, _ = discover(root)
    written = plot_levels(build_report(runs, METRICS["tow"]), tmp_path / "fig")
    assert [p.name for p in written] == ["fig.png", "fig.pdf"] and all(p.stat().st_size > 1000 for p in written)


def test_audit_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from evaluation.audits.report import Record, Target, aggregate
    from results.figures import plot_audit

    recs = []
    for pre in ("SGD", "SAM"):
        for tag, label, rt in (("retrain_lr0.1", "Retrain", True), ("FT_lr0.01", "FT", False),
                               ("GA_lr0.01", "GA", False)):
            for level in ("low", "high"):
                for seed in (1, 2, 3):
                    t = Target(f"/r/{pre}/{tag}/{level}/{seed}", tag.split("_")[0], tag, seed, f"mem-{level}_n90",
                               pre, rt, label)
                    recs.append(Record("lira", t, level, {"tpr@1%": 0.01 * seed, "reject": 0.05 + 0.01 * seed}))
                    if not rt:
                        recs.append(Record("klom", t, level, {"forget_p50": 0.5 * seed}))
    rows = aggregate(recs)
    assert {r.name for r in rows} == {"Retrain (control)", "FT", "GA"}
    written = plot_audit(rows, tmp_path / "audit", test_level=0.05)
    assert [p.name for p in written] == ["audit.png", "audit.pdf"]
    assert (tmp_path / "audit.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_audit([r for r in rows if r.audit == "relearn"], tmp_path / "none") == []
