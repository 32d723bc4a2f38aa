"""User text -> inert text for Streamlit markdown.

Streamlit already refuses raw HTML in markdown (unsafe_allow_html=False), but markdown itself can
still turn user text into links, images or colour directives. Every ASCII punctuation character
may be backslash-escaped in CommonMark, so escaping all of them makes text render literally.
"""

from __future__ import annotations

import re

_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: object) -> str:
    """Any text (error messages naming uploaded residue names, typed sequences) -> literal markdown."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    return _PUNCT.sub(r"\\\1", s)
