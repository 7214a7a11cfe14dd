"""The score table as LaTeX (``<stem>.tex``): a ``table`` float with a booktabs ``tabular``
(``\\toprule``, ``\\midrule``, ``\\bottomrule``; needs ``\\usepackage{booktabs}``).

Cells are ``mean $\\pm$ half-width`` (just the mean where a cell has one seed), ``--`` where a
method has no run on the forget set; a dagger marks cells with seeds left unscored (no retrain
reference, NaN) or collapsed, which the Markdown table spells out. The caption holds the formula,
the hyperparameters every row of a method shares and the ``--select`` choice. Text is escaped
(``_ % & # $ { } ~ ^ \\``) and the Greek letters and arrows of the labels become math.
"""
from __future__ import annotations

import io
import re

from results.render import caption_lines
from results.table import CONFIDENCE, Cell, Report

__all__ = ["tex_escape", "render_latex", "tex_cell"]

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$", "λ": r"$\lambda$", "ρ": r"$\rho$",
            "ℓ": r"$\ell$", "→": r"$\rightarrow$", "×": r"$\times$", "±": r"$\pm$", "—": "---", "–": "--",
            "…": r"\ldots{}", "≤": r"$\leq$", "≥": r"$\geq$"}
_DAGGER = r"$^\dagger$"


def tex_escape(text: str) -> str:
    """``text`` safe in LaTeX text mode (one pass, so the replacements are not escaped again)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def tex_cell(cell: Cell | None) -> str:
    if cell is None or not cell.results:
        return "--"
    flagged = bool(cell.missing_retrain or cell.collapsed_seeds or len(cell.values) < len(cell.results))
    if cell.mean is None:
        text = "--"
    elif cell.half is None:
        text = f"{cell.mean:.3f}"
    else:
        text = f"{cell.mean:.3f} $\\pm$ {cell.half:.3f}"
    return text + (_DAGGER if flagged else "")


def _caption(rep: Report, flagged: bool) -> str:
    m = rep.metric
    parts = [f"{m.title} on {rep.dataset} / {rep.arch}: mean ± half-width of the {int(CONFIDENCE * 100)}% "
             f"Student-t interval over seeds, against the retrain of the same forget set, seed and "
             f"pretraining recipe; n = distinct forget examples."]
    parts += caption_lines(rep)
    text = " ".join(tex_escape(p) for p in parts)
    if flagged:
        text += " " + _DAGGER + " " + tex_escape("some seeds unscored (no retrain reference) or collapsed; "
                                                 f"see {m.name}.md.")
    return text


def render_latex(rep: Report) -> str:
    """The ``table`` float of the score table (rows: label, start model; a column per forget set)."""
    cols = rep.columns
    spec = "ll" + "c" * len(cols)
    body = io.StringIO()
    flagged = False
    for row, _ in rep.rows:
        cells = [tex_cell(rep.cells.get((row, c.key))) for c in cols]
        flagged |= any(_DAGGER in c for c in cells)
        body.write(" & ".join([tex_escape(rep.label(row)), tex_escape(rep.pretrained.get(row, ""))] + cells)
                   + " \\\\\n")
    out = io.StringIO()
    w = out.write
    w("\\begin{table}[t]\n\\centering\n\\small\n")
    w(f"\\caption{{{_caption(rep, flagged)}}}\n")
    w(f"\\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', f'{rep.metric.name}-{rep.dataset}-{rep.arch}')}}}\n")
    w(f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n")
    w(" & ".join(["Method", "Pretrained"] + [tex_escape(c.header or c.key) for c in cols]) + " \\\\\n")
    w("\\midrule\n")
    w(body.getvalue())
    w("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return out.getvalue()
