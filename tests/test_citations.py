"""docs/citations.md cites every method of the registry; LICENSE is MIT; docs/recipes.md covers every recipe."""
import re
from pathlib import Path

from unlearn import METHODS, RUM

REPO = Path(__file__).resolve().parent.parent


def test_every_registry_method_has_a_citation_row():
    text = (REPO / "docs" / "citations.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    for name in (*METHODS, RUM):
        assert any(f"`{name}`" in row.split("|")[1] for row in rows), name
    for anchor in re.findall(r"\]\(#([\w-]+)\)", text):
        assert f'<a id="{anchor}"></a>' in text, anchor
    for what in ("SAM", "ASAM", "Sharp MinMax", "ToW"):
        assert what in text


def test_license_and_recipe_docs():
    lic = (REPO / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "the sharp-unlearn toolkit authors" in lic
    doc = (REPO / "docs" / "recipes.md").read_text()
    for recipe in (REPO / "recipes").glob("*.json"):
        assert f"`{recipe.name}`" in doc, recipe.name
