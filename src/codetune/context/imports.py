"""Import-aware selection for Python: which definitions in other files the current file uses.

`from pkg.mod import a, b as c` points at the definitions of `a` and `b` in the file of
`pkg.mod`; `import pkg.mod as m` (or plain `import pkg.mod`) at those of every `m.x`
(`pkg.mod.x`) the file uses. Module names become files of the same repository through
`ModuleMap`, which knows every suffix of every Python path (`src/pkg/mod.py` answers to
`mod`, `pkg.mod` and `src.pkg.mod`), so code under `src/` or a repository root both resolve.
A name a package re-exports (`from .sub import a` in `pkg/__init__.py`) is followed to its
definition, two levels deep at most.

Imports are found with regular expressions, not `ast`: the file being edited rarely parses
(the cursor is in the middle of a statement), and only import statements matter.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

# Matched against "\n" + text, so each starts with a literal the regex engine searches for
# quickly (a multi-line `^` is tried at every character).
_FROM = re.compile(
    r"\n[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)?|(?:[^\n\\;]|\\\n)*)")
_IMPORT = re.compile(r"\n[ \t]*import[ \t]+((?:[^\n\\;]|\\\n)+)")
_COMMENT = re.compile(r"#[^\n]*")


@dataclass(frozen=True)
class Imported:
    """One imported name. `name` is None for a module import, which the file then uses as
    `local.attr`; otherwise `local` is the name the file calls it by (its alias)."""

    module: str  # absolute dotted path (relative imports resolved against the file's folder)
    name: str | None
    local: str
    position: int  # character offset of the statement: import order breaks ties


def module_parts(path: str) -> list[str]:
    """`src/pkg/mod.py` -> ["src", "pkg", "mod"]; `pkg/__init__.py` -> ["pkg"]."""
    parts = path.split("/")
    last = parts[-1].rsplit(".", 1)[0]
    return parts[:-1] if last == "__init__" else parts[:-1] + [last]


def parse_imports(text: str, path: str) -> list[Imported]:
    """The imports of Python `text` (the file at `path` in its repository), in order."""
    folder = path.split("/")[:-1]
    found: list[Imported] = []
    text = "\n" + text  # match offsets are then those of the statement's line in `text`
    for m in _FROM.finditer(text):
        dots, mod, names = m.group(1), m.group(2), m.group(3)
        if dots:
            base = folder[: len(folder) - (len(dots) - 1)] if len(dots) - 1 <= len(folder) \
                else []
            mod = ".".join(base + [p for p in mod.split(".") if p])
        names = _COMMENT.sub("", names.replace("\\\n", " ")).strip("() \t\n")
        for item in names.split(","):
            words = item.split()
            if not words or words[0] == "*" or not mod:
                continue
            local = words[2] if len(words) == 3 and words[1] == "as" else words[0]
            found.append(Imported(mod, words[0], local, m.start()))
    for m in _IMPORT.finditer(text):
        for item in _COMMENT.sub("", m.group(1).replace("\\\n", " ")).split(","):
            words = item.split()
            if not words:
                continue
            local = words[2] if len(words) == 3 and words[1] == "as" else words[0]
            found.append(Imported(words[0], None, local, m.start()))
    found.sort(key=lambda i: i.position)
    return found


class ModuleMap:
    """Dotted module names -> the Python files of one repository that can be that module."""

    def __init__(self, paths: Iterable[str]):
        self._by_name: dict[str, list[str]] = {}
        for p in paths:
            if p.endswith((".py", ".pyi")):
                parts = module_parts(p)
                for i in range(len(parts)):
                    self._by_name.setdefault(".".join(parts[i:]), []).append(p)

    def find(self, module: str, near: str) -> str | None:
        """The file of `module` seen from the file `near`: among several candidates (two
        `utils.py`), the one sharing the most folders with `near`, then the shortest path,
        then `.py` over `.pyi`."""
        cands = self._by_name.get(module)
        if not cands:
            return None
        here = near.split("/")[:-1]

        def key(p: str) -> tuple[int, int, bool, str]:
            there = p.split("/")[:-1]
            common = 0
            for a, b in zip(here, there, strict=False):
                if a != b:
                    break
                common += 1
            return (-common, len(p), p.endswith(".pyi"), p)

        return min(cands, key=key)


@dataclass(frozen=True)
class Use:
    """A definition of another file that a file imports and uses: the file writes it as
    `spelled` (`local`, or `local.attr` through a module import)."""

    spelled: str
    local: str  # the imported name or module, as the file calls it
    file: str
    name: str
    position: int  # of the import statement
    direct: bool  # `from m import name` (True) or `import m` ... `m.name` (False)


# Python import statements, a parenthesized `from m import (a,\n b)` whole: what
# `without_imports` removes, so that only real uses of an imported name are counted
IMPORT_STATEMENTS = re.compile(r"^[ \t]*from[ \t]+\S+[ \t]+import[ \t]*\([^)]*\)[^\n]*"
                               r"|^[ \t]*(?:from[ \t]+\S+[ \t]+)?import\b[^\n]*", re.M)


def without_imports(code: str) -> str:
    """`code` without its Python import statements (each becomes an empty line)."""
    return IMPORT_STATEMENTS.sub("", code)


def imported_uses(text: str, path: str, modules: ModuleMap,
                  defines: Callable[[str], Mapping[str, int]],
                  imports_of: Callable[[str], list[Imported]]) -> list[Use]:
    """The definitions in other files of the repository that `text` (the file at `path`)
    imports, in import order: each `from m import name` that resolves to one, and each
    `m.attr` the file takes of an imported repository module `m`. `defines(file)` gives the
    names a file defines, `imports_of(file)` its imports (to follow re-exports)."""
    out: list[Use] = []
    for imp in parse_imports(text, path):
        if imp.name is not None:
            target = _resolve_name(imp.module, imp.name, path, modules, defines, imports_of)
            if target is not None:
                if target[0] != path:
                    out.append(Use(imp.local, imp.local, *target, imp.position, True))
                continue
            module = f"{imp.module}.{imp.name}"  # `from pkg import mod`: a module import
        else:
            module = imp.module
        file = modules.find(module, path)
        if file is None or file == path:
            continue  # most module imports (os, numpy) end here, before any scanning
        names = defines(file)
        for attr in dict.fromkeys(_attributes(imp.local, text)):
            if attr in names:
                out.append(Use(f"{imp.local}.{attr}", imp.local, file, attr, imp.position,
                               False))
    return out


def import_targets(text: str, path: str, window: str, modules: ModuleMap,
                   defines: Callable[[str], Mapping[str, int]],
                   imports_of: Callable[[str], list[Imported]],
                   seen: str | None = None) -> list[tuple[str, str]]:
    """(file, name) of the definitions in other files that `text`'s imports point at, ranked.

    Without a cursor (`seen` None: a whole file, for its neighbours): names used most often in
    `window` first, then the others in import order (`imported_uses`). With one (`text` the
    code around it, `seen` the part before it), first the names imported and used nowhere in
    `text` outside the import statements: unless the import is dead, the code being written
    is where they are used (CrossCodeEval asks for exactly such first uses); then the names
    used most in `window`; then those `seen` never used, whose definitions nothing in the
    prompt shows; then the rest, each tier in import order."""
    uses = imported_uses(text, path, modules, defines, imports_of)
    if not uses:
        return []
    counts: dict[str, Counter[str]] = {}  # module local -> attributes taken in the window
    before: dict[str, Counter[str]] = {}  # ... and in the code before the cursor
    body = without_imports(seen) if seen is not None else ""
    for u in uses:
        if not u.direct and u.local not in counts:
            counts[u.local] = Counter(_attributes(u.local, window))
            before[u.local] = Counter(_attributes(u.local, body))
    direct = {u.local for u in uses if u.direct}
    words: Counter[str] = Counter()
    used: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    if direct:
        # How often the window names each imported name: one pass for all of them. (An
        # import line in the window adds one to each name it imports, which leaves their
        # order as it was.)
        alts = re.compile("(?:" + "|".join(sorted(map(re.escape, direct), key=len,
                                                   reverse=True)) + r")\b")
        words = Counter(_whole_words(alts, window))
        if seen is not None:
            used = Counter(_whole_words(alts, body))
            anywhere = Counter(_whole_words(alts, without_imports(text)))

    def rank(i: int, u: Use) -> tuple[int, int, int, int, int]:
        near = words[u.local] if u.direct else counts[u.local][u.name]
        if seen is None:
            return 0, -near, 0, u.position, i
        old = (used[u.local] if u.direct else before[u.local][u.name]) > 0
        return int(not u.direct or anywhere[u.local] > 0), -near, int(old), u.position, i

    ranked = sorted((rank(i, u), u) for i, u in enumerate(uses))
    out, done = [], set()
    for _, u in ranked:
        if (u.file, u.name) not in done:
            done.add((u.file, u.name))
            out.append((u.file, u.name))
    return out


def _attributes(local: str, code: str) -> list[str]:
    """The attributes `code` takes of `local` (`m` in `m.f(...)` gives "f"), found with
    `str.find` (no regex to compile per module name). A match preceded by a name character
    or a dot (`pos.x` for `os`) is someone else's."""
    out, needle = [], local + "."
    i = code.find(needle)
    while i >= 0:
        if i == 0 or not (code[i - 1].isalnum() or code[i - 1] in "_."):
            m = _WORD.match(code, i + len(needle))
            if m:
                out.append(m.group())
        i = code.find(needle, i + len(needle))
    return out


def _whole_words(pattern: re.Pattern[str], code: str) -> list[str]:
    """Matches of `pattern` (which ends in `\\b`) not preceded by a name character or a dot.
    The check is here rather than a leading lookbehind, which would keep the regex engine
    from skipping quickly to the possible first characters."""
    return [m.group() for m in pattern.finditer(code)
            if m.start() == 0 or not (code[m.start() - 1].isalnum() or code[m.start() - 1]
                                      in "_.")]


_WORD = re.compile(r"\w+")


def _resolve_name(module: str, name: str, near: str, modules: ModuleMap,
                  defines: Callable[[str], Mapping[str, int]],
                  imports_of: Callable[[str], list[Imported]],
                  depth: int = 0) -> tuple[str, str] | None:
    """(file, name) where `name` of `module` is defined, following re-exports."""
    file = modules.find(module, near)
    if file is None:
        return None
    if name in defines(file):
        return file, name
    if depth >= 2:
        return None
    for imp in imports_of(file):
        if imp.name is not None and imp.local == name:
            return _resolve_name(imp.module, imp.name, file, modules, defines, imports_of,
                                 depth + 1)
    return None
