"""bench/gpu_check.py --device cpu --quick: every stage on synthetic CIFAR-10, the JSON summary."""
from __future__ import annotations

import json
import subprocess

from helpers import script_cmd, script_env

STAGES = ["pretrain_fp32", "pretrain_bf16", "pretrain_sam", "memorization", "forget_retrain", "forget_FT",
          "forget_NG", "forget_SCRUB", "forget_wfisher", "forget_RL_og", "salun_mask", "salun_RL", "rum",
          "analysis_tow", "analysis_tow_mia", "analysis_es"]


def test_quick_cpu_check_passes_and_writes_the_summary(tmp_path):
    out = tmp_path / "summary.json"
    r = subprocess.run(script_cmd("bench/gpu_check.py", "--device", "cpu", "--quick", "--out", out,
                                  "--work", tmp_path / "work"),
                       cwd=tmp_path, env=script_env(threads=1), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["ok"] is True and s["quick"] is True and s["machine"]["device"] == "cpu"
    checks = {c["name"]: c for c in s["checks"]}
    assert [n for n in checks if n in STAGES] == STAGES
    assert all(c["ok"] for c in checks.values()), [c for c in checks.values() if not c["ok"]]
    assert checks["torchrun"].get("skipped") and checks["throughput_bf16_compile"].get("skipped")
    tp = s["throughput"]
    assert tp["fp32"]["img_per_s"] > 0 and tp["bf16"]["img_per_s"] > 0 and "bf16_compile" not in tp
    ens = s["ensemble"]
    assert ens["models"] == 4 and ens["one_by_one_img_per_s"] > 0 and ens["batched_error"] is None
    assert "all checks passed" in r.stdout
