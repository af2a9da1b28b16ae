"""The joined view ("Split values" in the package docstring): a value written as several
string literals is scanned as one line, and what is found there is mapped back to the spans of
its pieces."""

from __future__ import annotations

import re

from codetune.data.secrets.detectors import (
    _ASCII_LOWER,
    _MAX_LINE,
    _TRIGGERS_CASED,
    _TRIGGERS_LOWER,
)
from codetune.data.secrets.windows import _scan_window

# --------------------------------------------------------------------------------------------
# The joined view: a value written as several literals (`"ab" "cd"`, `"ab" + "cd"`, a
# backslash line continuation, a backslash-newline inside a literal, a parenthesised literal on
# the lines after its name) is one value to the program, so the detectors also run on a
# one-line copy of the statement with the pieces' contents joined: `key = ("abcd")`. Built only
# where a trigger hit a line that such a continuation reaches (see `_regions`).

# Single-line string literals (a backslash before a newline continues one); a triple quote only
# breaks a chain (its closing quote may be out of reach).
_LITERAL = re.compile(
    r"(?P<tq>\"\"\"|''')"
    r"|(?P<pfx>\b[rRbBuUfF]{1,2})?(?:\"(?P<dq>(?:[^\"\\\n]++|\\(?:\r?\n|.))*+)\""
    r"|'(?P<sq>(?:[^'\\\n]++|\\(?:\r?\n|.))*+)'|`(?P<bq>(?:[^`\\\n]++|\\(?:\r?\n|.))*+)`)"
)
# What may stand between two pieces of one value: blanks, one `+`, backslash line
# continuations and comments without quotes.
_BLANKS = r"(?:[ \t\r\n]++|\\\r?\n|(?:#|//)[^\n\"'`]*+\n)*+"
_GAP = re.compile(_BLANKS + r"(?:\+" + _BLANKS + ")?")
_CLOSE = re.compile(_BLANKS + r"\)")
_BACKSLASH_NL = re.compile(r"\\\r?\n")
# A literal that starts a line and is followed by a colon is the next key of a mapping (JSON
# with a comma missing, YAML), not the rest of the value above it.
_KEY_AFTER = re.compile(r"[ \t]*:(?!:)")
# What `_scan_joined` asks of a chain, as one search of a region before it is lexed: a joint
# between two literals with no blank on either side, a backslash-newline inside a literal,
# `Bearer `/`Basic ` before a joint, or a literal without blanks alone on the line after a `(`
# or a backslash (the value of the name above it).
_JOINT = re.compile(
    r"(?<!\\)[^\s\"'`\\][\"'`]" + _GAP.pattern + r"[rRbBuUfF]{0,2}[\"'`][^\s\"'`\\]"
    r"|[^\s\\]\\\r?\n[^\s\"'`]|(?:Bearer|Basic) [\"'`]"
    r"|[(\\][ \t]*\r?\n[ \t]*[rRbBuUfF]{0,2}(?P<q>[\"'`])[^\s\"'`\\]{4,}(?P=q)"
)
# Two literals on one line with only blanks or a `+` between them (the first quote follows a
# value character, so `" "` and `f("", x)` do not count).
_INLINE_JOIN = re.compile(r"(?<=[^\s\"'`(\[{,=:])[\"'`][ \t]*\+?[ \t]*[rRbBuUfF]{0,2}[\"'`]")
_NEXT_HEAD = re.compile(r"[ \t]*(?:\+|[rRbBuUfF]{0,2}[\"'`])")
_TAIL_COMMENT = re.compile(r"[\"'`][ \t]*(?:#|//)[^\n\"'`]*$")
_JOIN_LINES = 32  # how far (in lines, each way) a statement is followed from a trigger's line
_JOIN_REACH = 2048  # ...and in characters
# A run of more literals is a table (each a line of data), not one value; the cap also bounds
# the work of mapping detections back to pieces in a file built to be slow.
_MAX_PIECES = 64


def _continues(text: str, a: int, b: int) -> bool:
    """Whether the line text[a:b] runs on into the next one (from b + 1) as part of a string
    value: it ends with a backslash or `+`, or with `(` or a literal and the next line starts
    with a literal or a `+`."""
    e = b
    while e > a and text[e - 1] in " \t\r":
        e -= 1
    if e == a:
        return False
    c = text[e - 1]
    if c in "\\+":
        return True
    if c in "(\"'`" or ((text.find("#", a, e) >= 0 or text.find("//", a, e) >= 0)
                        and _TAIL_COMMENT.search(text, a, e)):
        return _NEXT_HEAD.match(text, b + 1) is not None
    return False


def _regions(text: str, windows: list[tuple[int, int, bool]]) -> list[tuple[int, int]]:
    """The statements around the trigger windows that contain a continued literal: a window
    grown over the lines that continue into it and that it continues into. A window with no
    continuation in reach (almost all) costs a look at the ends of three lines and, if it has
    four quotes, one regex search of its own text."""
    n = len(text)
    out: list[tuple[int, int]] = []
    for ws, we, at_line_start in windows:
        if out and we <= out[-1][1]:
            continue  # a later line of a statement already followed
        rs, re_ = ws, we
        if at_line_start and we - ws <= _MAX_LINE:
            for _ in range(_JOIN_LINES):
                if rs == 0:
                    break
                prev = text.rfind("\n", 0, rs - 1) + 1
                if rs - prev > _MAX_LINE or not _continues(text, prev, rs - 1):
                    break
                rs = prev
            for _ in range(_JOIN_LINES):
                if re_ >= n or not _continues(text, text.rfind("\n", 0, re_) + 1, re_):
                    break
                nxt = text.find("\n", re_ + 1)
                nxt = n if nxt < 0 else nxt
                if nxt - re_ > _MAX_LINE:
                    break
                re_ = nxt
        if rs == ws and re_ == we and (
                text.count('"', ws, we) + text.count("'", ws, we) + text.count("`", ws, we) < 4
                or not _INLINE_JOIN.search(text, ws, we)):
            continue
        rs, re_ = max(rs, ws - _JOIN_REACH), min(re_, we + _JOIN_REACH)
        if out and rs <= out[-1][1]:
            out[-1] = (min(out[-1][0], rs), max(out[-1][1], re_))
        else:
            out.append((rs, re_))
    return out


def _body(m: re.Match[str]) -> tuple[int, int]:
    return m.span(m.lastgroup)  # dq, sq or bq: the contents between the quotes


def _back_over(text: str, g: int, lo: int, chars: str) -> int:
    """Where the run of `chars` ending at `g` starts (not before `lo`, nor 256 back)."""
    s0 = max(lo, g - 256)
    return s0 + len(text[s0:g].rstrip(chars))


def _prefix_end(text: str, j: int, lo: int) -> tuple[int, bool]:
    """Where the code before the literal at `j` ends, looking back over blanks, `(` and
    backslash line continuations (over a newline only on the way to one of those); and whether
    a `(` was crossed."""
    g, paren = j, False
    while True:
        k = _back_over(text, g, lo, " \t\r\n")
        if k > lo and text[k - 1] == "(":
            g, paren = k - 1, True
        elif k > lo and text[k - 1] == "\\" and "\n" in text[k:g]:
            g = k - 1
        else:
            return _back_over(text, g, lo, " \t"), paren


def _chains(text: str, rs: int, re_: int) -> list[list[re.Match[str]]]:
    """Runs of string literals in text[rs:re_] that form one value (most of them one literal)."""
    chains: list[list[re.Match[str]]] = []
    cur: list[re.Match[str]] = []
    for m in _LITERAL.finditer(text, rs, re_):
        if m.group("tq"):
            cur = []
        elif (cur and m.start() - cur[-1].end() <= 256 and len(cur) < _MAX_PIECES
              and _GAP.fullmatch(text, cur[-1].end(), m.start())
              and not (_KEY_AFTER.match(text, m.end())
                       and "\n" in text[cur[-1].end():m.start()])):
            cur.append(m)
        else:
            cur = [m]
            chains.append(cur)
    return chains


def _triggered(s: str) -> bool:
    """Whether any trigger hits `s` (a joined view: one line, so no windows to cut)."""
    if any(rx.search(s) for rx in _TRIGGERS_CASED):
        return True
    low = s.lower()
    if len(low) != len(s):
        low = s.translate(_ASCII_LOWER)
    return any(rx.search(low) for rx in _TRIGGERS_LOWER)


def _joint_worth_joining(text: str, pieces: list[tuple[int, int]]) -> bool:
    """Whether joining pieces can show a secret the line scan cannot. Every detector match
    inside one line is found there (the triggers see to that), so a new one must span a joint
    with no blank on either side (no value detector accepts a blank; `Bearer ` is the one
    prefix that ends in one). Messages and SQL, split at their spaces, stop here."""
    parts = [(a, b) for a, b in pieces if b > a]
    for (_, b), (a, _) in zip(parts, parts[1:], strict=False):
        # an escape (`\n`, `\t`, ...) counts as a blank: text, not a token, continues there
        if not (text[b - 1].isspace() or text[b - 2] == "\\" or text[a].isspace()
                or text[a] == "\\"):
            return True
        if text.endswith(("Bearer ", "Basic "), 0, b):
            return True
    return False


_Spans = tuple[tuple[int, int], ...]

_BLANK = re.compile(r"\s")


def _scan_joined(text: str, windows: list[tuple[int, int, bool]],
                 line_raw: list[tuple[int, int, str]], found: list[tuple[_Spans, str]]) -> None:
    """Append to `found` every secret the joined view of a continued literal shows, as the
    spans of its pieces in `text`; and extend a line-level detection that is a whole literal of
    a chain over the pieces after it (`password = "Tr0ub4" "dor&3 horse"`)."""
    whole = {(a, b): kind for a, b, kind in line_raw}
    for rs, re_ in _regions(text, windows):
        if not _JOINT.search(text, rs, re_):
            continue
        for chain in _chains(text, rs, re_):
            pieces: list[tuple[int, int]] = []
            for m in chain:
                a, b = _body(m)
                for c in _BACKSLASH_NL.finditer(text, a, b):
                    pieces.append((a, c.start()))
                    a = c.end()
                pieces.append((a, b))
            first = chain[0]
            if len(pieces) > 1:
                for m in chain[:-1]:
                    kind = whole.get(_body(m))
                    if kind:  # the first such literal's extension covers any later one's
                        start = _body(m)[0]
                        found.append((tuple(p for p in pieces if p[0] >= start), kind))
                        break
                if not _joint_worth_joining(text, pieces):
                    continue
                g, paren = _prefix_end(text, first.start(), rs)
                close = _CLOSE.match(text, chain[-1].end())
            else:
                # One literal is new to the detectors only as the whole value of a name on an
                # earlier line: `key = (` or `key = \` above it; not an item of a tuple or a call.
                a, b = pieces[0]
                if b - a < 4 or _BLANK.search(text, a, b):
                    continue
                g, paren = _prefix_end(text, first.start(), rs)
                close = _CLOSE.match(text, chain[-1].end())
                if "\n" not in text[g:first.start()] or (paren and not close):
                    continue
            line_start = max(text.rfind("\n", 0, g) + 1, g - 512)
            # `key = (` + the first literal's prefix and quote
            head = text[line_start:g] + " (" * paren + text[first.start():_body(first)[0]]
            content = "".join(text[a:b] for a, b in pieces)
            tail_from = close.end() if close else chain[-1].end()
            eol = text.find("\n", tail_from)
            eol = len(text) if eol < 0 else min(eol, tail_from + 512)
            quote = text[_body(first)[0] - 1]
            joined = head + content + quote + ")" * bool(close) + text[tail_from:eol]
            out: list[tuple[int, int, str]] = []
            if _triggered(joined):
                _scan_window(joined, 0, False, out)
            c0 = len(head)
            for a, b, kind in out:
                a, b = max(a - c0, 0), min(b - c0, len(content))
                if a >= b:
                    continue  # in the code around the literal: the line scan sees that
                spans, off = [], 0
                for x, y in pieces:
                    lo, hi = max(a, off), min(b, off + y - x)
                    if lo < hi:
                        spans.append((x + lo - off, x + hi - off))
                    off += y - x
                found.append((tuple(spans), kind))
