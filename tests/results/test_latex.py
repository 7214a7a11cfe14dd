"""results/latex.py: the table as a booktabs LaTeX float that parses (checked by a small checker:
balanced braces, one cell per column of the tabular spec on every row, the booktabs rules, no
unescaped ``_`` or ``%``)."""
import re

import pytest

from fake_runs import analyse, make_fake_runs, make_quickstart_like, write_run
from results.latex import tex_escape


def _strip_escapes(tex: str) -> str:
    return re.sub(r"\\[{}_%&#$]", "", tex)


def check_latex(tex: str) -> int:
    """Raise AssertionError unless ``tex`` is a well-formed booktabs table; returns its columns."""
    plain = _strip_escapes(tex)
    depth = 0
    for ch in plain:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a closing brace without its opening one"
    assert depth == 0, "unbalanced braces"
    assert re.search(r"(?<!\\)[_%]", tex) is None, "unescaped _ or %"
    assert plain.count("$") % 2 == 0, "unbalanced math"
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1, rule
    spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", tex).group(1)
    ncols = len(re.findall(r"[lcr]", spec))
    body = tex.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [ln for ln in body.splitlines() if ln.strip().endswith("\\\\")]
    assert rows, "no table rows"
    for ln in rows:
        cells = re.split(r"(?<!\\)&", ln)
        assert len(cells) == ncols, f"{len(cells)} cells for {ncols} columns: {ln}"
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert "\\begin{table}" in tex and "\\end{table}" in tex and "\\caption{" in tex
    return ncols


def test_escape():
    assert tex_escape("cnn_s 50% a&b #1 $x {y} ~ ^") == \
        r"cnn\_s 50\% a\&b \#1 \$x \{y\} \textasciitilde{} \textasciicircum{}"
    assert tex_escape("NegGrad+ (α=0.97) ±→") == r"NegGrad+ ($\alpha$=0.97) $\pm$$\rightarrow$"


def test_quickstart_table_parses(tmp_path):
    analyse(make_quickstart_like(tmp_path / "runs"), tmp_path / "out", "--dataset", "digits")
    tex = (tmp_path / "out" / "tow.tex").read_text()
    assert check_latex(tex) == 2 + 4
    assert "Method & Pretrained & low (n=90) & mid (n=90) & high (n=90) & mix (n=77) \\\\" in tex
    assert "NegGrad+: $\\alpha$=0.99, lr=0.01" in tex  # the shared values are in the caption
    assert "RUM (none$\\rightarrow$FT$\\rightarrow$SalUn) & SGD & -- & -- & -- &" in tex


def test_intervals_daggers_and_escaped_labels(tmp_path):
    root = make_fake_runs(tmp_path / "runs", with_cifar=False)
    start = {"key": {"wd": 0}, "label": "SGD_wd0 100%"}
    for method in ("retrain", "FT"):
        write_run(tmp_path / "runs" / "odd", method=method, tag=method, forget_set="digits_mem-low_n60", seed=1,
                  acc=(1, 0.9, 0.9, 0.2), level="low", model_name="odd", start_recipe=start)
    analyse(root, tmp_path / "out", metric="tow_mia")
    tex = (tmp_path / "out" / "tow_mia.tex").read_text()
    check_latex(tex)
    assert re.search(r"\d\.\d{3} \$\\pm\$ \d\.\d{3}", tex)  # mean $\pm$ half-width
    assert "$^\\dagger$" in tex and "SGD\\_wd0 100\\%" in tex  # mem-mid seed 3 lacks a retrain
    with pytest.raises(AssertionError):
        check_latex(tex.replace("\\_wd0", "_wd0"))
    with pytest.raises(AssertionError):
        check_latex(tex.replace("\\midrule\n", "\\midrule\nx & y \\\\\n"))
