"""Cutting a file into chunks, and the identifier-aware tokens BM25 ranks them by.

A chunk is a run of 8 to 20 lines (15 by preference) of one file. Chunks do not overlap and
cover every non-blank line: the index holds each line once, so it is no bigger than the code
(a 10-line window with a 5-line stride, CrossCodeEval's choice, doubles it and then has to
deduplicate the overlaps at packing time). Where a chunk ends is chosen among the lines 8..20
after its start, preferring, in order: just before a top-level definition, before any
definition or decorator, after a blank line, then the 15th line. So a chunk mostly holds whole
functions or their beginnings, and the chunk that holds `def name` starts with it. Blank lines
at a chunk's edges are left out (its line span says where the text is).

Tokens: every identifier in lower case, plus its snake_case and camelCase parts when it has
more than one (`parseHTTPHeader` -> `parsehttpheader parse http header`), so a query that says
`http_header` meets code that says `HttpHeader`. Numbers, punctuation, one-letter names and
words found in nearly every chunk of code (`self`, `return`, `the`, ...) carry no signal and
are dropped. Pure functions of the text: the index, the query and the tests use the same ones.
"""

from __future__ import annotations

import bisect
import keyword
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TARGET_LINES = 15
MIN_LINES = 8
MAX_LINES = 20
MAX_CHARS = 3000  # a chunk of long lines ends sooner: a snippet must fit a prompt budget

# A line that starts a definition in the languages codetune sees most (Python, JS/TS, Go,
# Rust, Java/C#/Kotlin, Ruby), or a decorator. Cutting before one keeps definitions whole.
_DEF_WORDS = ("class", "function", "func", "fn", "pub", "impl", "interface", "struct", "enum",
              "trait", "export", "public", "private", "protected", "module", "type", "const",
              "fun")
_DEF = r"@\w|(?:async[ \t]+)?def\b|" + "|".join(rf"{w}\b" for w in _DEF_WORDS)
# The first characters those can start with: a lookahead on them rejects most lines before
# the alternation is tried (3x faster on the stdlib).
_FIRST = "".join(sorted({"@", "a", "d"} | {w[0] for w in _DEF_WORDS}))

# Keywords of the languages above and the commonest English words of comments: in nearly
# every chunk, so they only add length (BM25's IDF would weigh them near zero anyway).
STOPWORDS = frozenset({
    "self", "cls", "def", "return", "if", "elif", "else", "for", "while", "in", "is", "not",
    "and", "or", "none", "true", "false", "import", "from", "as", "with", "pass", "class",
    "try", "except", "finally", "raise", "lambda", "yield", "async", "await", "global",
    "nonlocal", "del", "assert", "break", "continue", "function", "var", "let", "const",
    "this", "new", "null", "undefined", "void", "public", "private", "protected", "static",
    "final", "package", "func", "nil", "end", "do", "then", "fn", "mut", "pub", "use",
    "the", "of", "to", "an", "be", "it", "that", "on", "at", "by", "we", "can", "are", "was",
})

IDENTIFIER = re.compile(r"[^\W\d]\w*")
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


@dataclass(frozen=True)
class Chunk:
    """Lines `start_line`..`end_line` (1-based, inclusive) of a file, and their text."""

    start_line: int
    end_line: int
    text: str


def chunk_lines(text: str) -> list[Chunk]:
    """The file `text` cut into chunks (see the module docstring). Lines are split on "\\n"
    only, as editors number them.

    What a cut before each line is worth is found for the whole file at once (C-level regex
    scans and numpy), so the loop over chunks only compares precomputed numbers."""
    lines = text.split("\n")
    n = len(lines)
    blank = np.array([not ln or ln.isspace() for ln in lines], dtype=bool)
    if blank.all():
        return []
    starts = np.zeros(n + 1, dtype=np.int64)  # character offset of each line (and the end)
    np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=n) + 1, out=starts[1:])

    nl_text = "\n" + text  # each pattern starts with "\n", which sre searches for quickly

    def lines_matching(pattern: re.Pattern[str]) -> np.ndarray:
        at = np.fromiter((m.start() for m in pattern.finditer(nl_text)), dtype=np.int64)
        flags = np.zeros(n, dtype=bool)
        flags[np.searchsorted(starts, at, side="right") - 1] = True
        return flags

    # rank[c]: a cut just before line c. 3 before a top-level definition, 2 before an
    # indented one, 1 after a blank line, 0 elsewhere, -1 after a decorator (never part a
    # decorator from what it decorates).
    defs, top = lines_matching(_DEF_LINE), lines_matching(_TOP_LINE)
    after_deco = np.r_[False, lines_matching(_DECO_LINE)[:-1]]
    after_blank = np.r_[False, blank[:-1]]
    rank = np.where(after_blank, 1, np.where(after_deco, -1, 0))
    rank = np.where((rank >= 0) & defs, np.where(top, 3, 2), rank)
    next_text = np.minimum.accumulate(np.where(blank, n, np.arange(n))[::-1])[::-1].tolist()
    ranks, offsets, blanks = rank.tolist(), starts.tolist(), blank.tolist()  # fast to index
    chunks: list[Chunk] = []
    s = next_text[0]  # the first non-blank line at or after each line
    while s < n:
        end = _cut(ranks, offsets, s, n)
        e = end
        while blanks[e - 1]:
            e -= 1
        chunks.append(Chunk(s + 1, e, text[offsets[s]:offsets[e] - 1]))
        s = next_text[end] if end < n else n
    return chunks


# Matched against "\n" + text: a match at i is the line starting at offset i of text. (A
# multi-line `^` pattern would be tried at every character: 4x slower on the stdlib.)
_DEF_LINE = re.compile(rf"\n[ \t]*(?=[{_FIRST}])(?:{_DEF})")
_TOP_LINE = re.compile(rf"\n(?=[{_FIRST}])(?:{_DEF})")
_DECO_LINE = re.compile(r"\n[^\S\n]*@")


def _cut(rank: list[int], starts: list[int], s: int, n: int) -> int:
    """The index of the first line after the chunk that starts at line index `s`."""
    hi = min(n, s + MAX_LINES, bisect.bisect_right(starts, starts[s] + MAX_CHARS) - 1)
    hi = max(s + 1, hi)  # long lines end a chunk sooner, but it keeps at least one line
    if hi == n:
        return n
    lo = min(s + MIN_LINES, hi)
    # Best rank, then nearest to TARGET_LINES, then the earliest (|distance| <= 20 < 64).
    target = s + TARGET_LINES
    best = max(range(lo, hi + 1), key=lambda c: rank[c] * 64 - abs(c - target))
    return best if rank[best] >= 0 else hi


def tokenize(text: str) -> list[str]:
    """The BM25 tokens of `text`, in order, repeats kept (term frequency counts)."""
    out: list[str] = []
    for ident in IDENTIFIER.findall(text):
        out.extend(identifier_tokens(ident))
    return out


def split_identifier(ident: str) -> tuple[str, ...]:
    """`parse_HTTPHeader2` -> ("parse_httpheader2", "parse", "http", "header"): the whole
    identifier and its parts, lower case, without stop words and one-letter parts."""
    whole = ident.lower()
    parts = [p.lower() for p in (_PARTS.findall(ident) if ident.isascii()
                                 else ident.split("_"))]  # no case to split non-Latin on
    toks = [whole] if len(whole) > 1 and whole not in STOPWORDS else []
    if len(parts) > 1 or (parts and parts[0] != whole):
        seen = {whole}
        for p in parts:
            if len(p) > 1 and p not in STOPWORDS and p not in seen:
                seen.add(p)
                toks.append(p)
    return tuple(toks)


# The same, cached: queries meet the same names again and again. (An index build keeps its
# own cache of token ids per identifier, so it calls `split_identifier`.)
identifier_tokens = lru_cache(maxsize=1 << 18)(split_identifier)


# --------------------------------------------------------------------------- Python


_TOP_DEF = re.compile(r"(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)|(\w+)[ \t]*(?::[^=\n]*)?=(?!=)")


def python_definitions(chunks: list[Chunk]) -> dict[str, int]:
    """Top-level names a Python file defines (`def name`, `class name`, `NAME = ...`,
    `NAME: T = ...`) -> the index of the chunk holding the definition (the first one, as an
    import of the module sees the first binding unless it is rebound)."""
    found: dict[str, int] = {}
    for i, ch in enumerate(chunks):
        for line in ch.text.split("\n"):
            if not line or line[0].isspace() or line[0] == "#":
                continue
            m = _TOP_DEF.match(line)
            if m:
                name = m.group(1) or m.group(2)
                if not keyword.iskeyword(name):  # `else: x = 1` binds x, not else
                    found.setdefault(name, i)
    return found


def is_python(path: str) -> bool:
    """Whether `path` holds Python source (notebooks reach the index as their code cells)."""
    return path.endswith((".py", ".pyi", ".ipynb"))


_DECORATOR = re.compile(r"[ \t]*@")
_SIGNATURE = re.compile(r"[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+\w")
_ASSIGN = re.compile(r"\w+[ \t]*(?::[^=\n]*)?=(?!=)")


def _signature_end(lines: list[str], i: int, limit: int = 8) -> int:
    """The last line of the `def`/`class` header starting at line i: where its brackets close
    and a ":" follows (at most `limit` lines)."""
    depth = 0
    for j in range(i, min(len(lines), i + limit)):
        for ch in lines[j].split("#")[0]:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch == ":" and depth <= 0:
                return j
    return i


def stub_view(text: str) -> str:
    """A Python chunk as a type stub shows it: decorators, `def`/`class` headers (over several
    lines where they run on), each docstring's first line, an elided function body as `...`,
    and top-level assignments. What a snippet of an imported definition needs to say how to
    call it, in a fraction of the tokens, so a budget holds several imported APIs rather than
    one or two bodies. A chunk with none of these is returned as it is."""
    lines = text.split("\n")
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if _DECORATOR.match(line):
            out.append(line)
        elif _SIGNATURE.match(line):
            j = _signature_end(lines, i)
            out += lines[i:j + 1]
            body = lines[j].split("#")[0].rstrip()
            k = j + 1
            while k < n and not lines[k].strip():
                k += 1
            if not body.endswith(":") or k >= n or not lines[k][:1].isspace():
                i = j + 1  # a one-line definition, or no body in this chunk
                continue
            doc = lines[k].strip().lstrip("rbuRBU")[:3]
            if doc in ('"""', "\'\'\'"):  # its first line, the string closed on it
                out.append(lines[k].rstrip() + (doc if lines[k].count(doc) == 1 else ""))
            if not line.lstrip().startswith("class"):  # a class shows its methods' headers
                out.append(line[:len(line) - len(line.lstrip())] + "    ...")
            i = j + 1
            continue
        elif line and not line[0].isspace() and _ASSIGN.match(line):
            out.append(line)
        i += 1
    if not out:
        return text
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
