"""Sphinx configuration of the sb3-dreamer documentation (``sphinx-build -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import sb3_dreamer

project = "sb3-dreamer"
author = "sb3-dreamer contributors"
copyright = "2026, sb3-dreamer contributors"  # noqa: A001 - the name Sphinx reads
release = sb3_dreamer.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# results/ holds data (CSVs, PNGs, raw tables of example runs), not pages
exclude_patterns = ["_build", "results/*.md"]
# Headings of the markdown pages become link targets (``page.md#heading``).
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
# Dreamer subclasses SB3's OffPolicyAlgorithm: document what this package adds, not SB3's API.
autodoc_inherit_docstrings = False

html_theme = "sphinx_rtd_theme"
html_title = f"sb3-dreamer {release}"
