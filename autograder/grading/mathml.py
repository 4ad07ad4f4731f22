"""Equations of a feedback page as MathML, rendered by the browser itself: no MathJax, no CDN, no script.

nbconvert's pages load MathJax from a CDN, so a page opened without internet shows the lecture's
equations as raw LaTeX (``$\\mathbf{R}_{\\Theta,m}$``). A feedback page is one file a student keeps: a
relative link to a local MathJax would break as soon as it is copied. So the TeX of markdown (cells, and
markdown outputs such as ``display(Markdown(...))``) is converted once, here, by ``latex2mathml`` (PyPI,
maintained), into ``<math>`` elements that Chromium, Firefox and Safari render natively (MathML Core).

What counts as math is what nbconvert's MathJax configuration reads: ``$...$`` and ``\\(...\\)`` inline,
``$$...$$`` and ``\\[...\\]`` displayed, never inside code (fenced blocks, indented blocks, backtick
spans) and never an escaped ``\\$``. An expression latex2mathml cannot convert stays as it was (TeX, in a
``<code>`` element, so that it reads as source rather than as broken text) and is counted.
"""
from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$\n?", re.M | re.S)        # fenced code blocks
_INDENTED = re.compile(r"(?:^(?: {4}|\t).*\n?)+", re.M)                # indented code blocks
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)           # `code`, ``co`de``
_MATH = re.compile(
    r"(?<!\\)\$\$(?P<d1>.+?)(?<!\\)\$\$"          # $$ ... $$
    r"|\\\[(?P<d2>.+?)\\\]"                        # \[ ... \]
    r"|(?<![\\$])\$(?![\s$])(?P<i1>(?:\\.|[^$\\])+?)\$(?!\$)"   # $ ... $ (as MathJax: a space may end it)
    r"|\\\((?P<i2>.+?)\\\)",                       # \( ... \)
    re.S)
# environments MathJax typesets on their own (processEnvironments), outside $...$
_ENV = re.compile(r"\\begin\{(?P<env>equation\*?|align\*?|gather\*?)\}(?P<body>.+?)\\end\{(?P=env)\}", re.S)


def _mathml(tex: str, block: bool) -> str | None:
    try:
        out = convert(tex.strip(), display="block" if block else "inline")
    except Exception:      # latex2mathml raises its own errors, and others, on TeX it does not know
        return None
    return out.replace("\n", "")


def _math_in(text: str, failed: list[str]) -> str:
    def one(m: re.Match) -> str:
        groups = m.groupdict()
        tex = groups.get("d1") or groups.get("d2") or groups.get("i1") or groups.get("i2") or groups.get("body")
        block = bool(groups.get("d1") or groups.get("d2") or groups.get("body"))
        if groups.get("env", "").startswith("align"):
            tex = r"\begin{aligned}" + tex + r"\end{aligned}"
        out = _mathml(tex, block)
        if out is None:
            failed.append(tex.strip())
            return f"<code>{html.escape(m.group(0))}</code>"
        return out
    text = _ENV.sub(one, text)
    return _MATH.sub(one, text)


def markdown_to_mathml(source: str, failed: list[str] | None = None) -> str:
    """``source`` (markdown) with its TeX replaced by MathML; code is left alone. TeX that could not be
    converted is appended to ``failed``."""
    failed = [] if failed is None else failed
    if "$" not in source and "\\(" not in source and "\\[" not in source and "\\begin" not in source:
        return source
    # cut the code out, convert the rest, put the code back
    pieces, kept = [], []

    def hold(m: re.Match) -> str:
        kept.append(m.group(0))
        return f"\x00{len(kept) - 1}\x00"
    held = _CODE_SPAN.sub(hold, _INDENTED.sub(hold, _FENCE.sub(hold, source)))
    pieces = _math_in(held, failed)
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], pieces)


def notebook_to_mathml(nb) -> list[str]:
    """Convert, in place, the TeX of every markdown cell and markdown output of ``nb``; return the TeX
    that could not be converted."""
    failed: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = markdown_to_mathml(cell.source, failed)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if isinstance(data.get("text/markdown"), str):
                data["text/markdown"] = markdown_to_mathml(data["text/markdown"], failed)
            elif isinstance(data.get("text/latex"), str) and "text/html" not in data:
                text = data["text/latex"]
                converted = _math_in(text, failed) if "$" in text or "\\[" in text else _mathml(text, True)
                if converted:
                    data["text/html"] = converted
    return failed


_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)


def without_mathjax(page: str) -> str:
    """The page without nbconvert's MathJax loader and configuration (a CDN script: nothing to load offline)."""
    return _MATHJAX.sub("", page)
