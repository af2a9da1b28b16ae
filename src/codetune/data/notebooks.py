"""Jupyter notebooks to source text.

The reference notebook kept only code cells; so do we by default. Markdown cells can be kept as comments of
the kernel's language (`prepare.notebook_markdown=true`), which keeps the explanation next to
the code without teaching the model to emit raw markdown inside a code file.
"""

from __future__ import annotations

import json

_COMMENT = {"python": "#", "r": "#", "julia": "#", "ruby": "#", "bash": "#", "sh": "#",
            "scala": "//", "javascript": "//", "typescript": "//", "java": "//", "c++": "//",
            "c": "//", "go": "//", "rust": "//", "kotlin": "//", "sql": "--", "lua": "--",
            "haskell": "--"}


# Kernel language (as notebooks spell it) -> the language name of `languages.py`.
_KERNEL_LANGUAGES = {"python": "Python", "python3": "Python", "r": "R", "julia": "Julia",
                     "scala": "Scala", "javascript": "JavaScript", "typescript": "TypeScript",
                     "c++": "C++", "sql": "SQL", "bash": "Shell", "sh": "Shell", "go": "Go",
                     "rust": "Rust", "java": "Java", "kotlin": "Kotlin", "ruby": "Ruby"}


class NotebookError(ValueError):
    """The file is not a readable notebook (the reason is the message)."""


def notebook_to_source(text: str, keep_markdown: bool = False) -> tuple[str, str | None]:
    """(source, language) of a notebook: code cells joined by blank lines; `language` is the
    kernel's language (e.g. "Python"), or None if the notebook does not say."""
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookError(f"not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError("no 'cells' list (not an nbformat 4 notebook)")
    meta = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
    lang = None
    for key in ("language_info", "kernelspec"):
        info = meta.get(key)
        if isinstance(info, dict):
            lang = info.get("name") if key == "language_info" else info.get("language")
            if isinstance(lang, str) and lang:
                lang = lang.lower()
                break
            lang = None
    comment = _COMMENT.get(lang or "python", "#")
    parts = []
    for i, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict):
            raise NotebookError(f"cell {i} is not an object")
        src = cell.get("source", "")
        if isinstance(src, list):
            if not all(isinstance(s, str) for s in src):
                raise NotebookError(f"cell {i} has a non-text source")
            src = "".join(src)
        elif not isinstance(src, str):
            raise NotebookError(f"cell {i} has a non-text source")
        kind = cell.get("cell_type")
        if kind == "code" and src.strip():
            parts.append(src.rstrip("\n"))
        elif kind == "markdown" and keep_markdown and src.strip():
            parts.append("\n".join(f"{comment} {line}".rstrip() for line in src.splitlines()))
    display = _KERNEL_LANGUAGES.get(lang, lang.capitalize()) if lang else None
    return ("\n\n\n".join(parts) + "\n" if parts else ""), display
