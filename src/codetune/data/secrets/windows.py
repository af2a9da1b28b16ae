"""The line scan: the windows around the trigger hits (`_windows`; a long line is cut into
stretches) and every detector run over one window (`_scan_window`)."""

from __future__ import annotations

import re

from codetune.data.secrets.assignments import (
    _ASSIGN_LINE,
    _ASSIGN_QUOTED,
    _DIGEST_NAME,
    _URL_CREDS,
    _high_entropy,
    _key_class,
    _norm_key,
    _plausible_value,
    _unquoted_ok,
)
from codetune.data.secrets.detectors import (
    _ASCII_LOWER,
    _BY_NEEDLE_CASED,
    _BY_NEEDLE_LOWER,
    _DETECTORS,
    _DS_STRIP,
    _MAX_LINE,
    _NEEDLES_CASED,
    _NEEDLES_LOWER,
    _TRIGGERS_BLANK,
    _TRIGGERS_CASED,
    _TRIGGERS_LOWER,
    _WINDOW_AFTER,
    _WINDOW_BEFORE,
    _placeholder_token,
)


def _scan_window(s: str, base: int, at_line_start: bool, out: list[tuple[int, int, str]]) -> None:
    """Append (start, end, kind) for every detection in `s`, offsets shifted by `base`."""
    n = len(s)
    low = s.lower()
    if len(low) != n:
        low = s.translate(_ASCII_LOWER)
    todo: set[int] = set()
    for needle in set(_NEEDLES_CASED.findall(s)):
        todo.update(_BY_NEEDLE_CASED[needle])
    for needle in set(_NEEDLES_LOWER.findall(low)):
        todo.update(_BY_NEEDLE_LOWER[needle])
    for i in todo:
        d = _DETECTORS[i]
        if n < d.minlen:
            continue
        for m in d.rx.finditer(s):
            if d.group is not None:
                a, b = m.span(d.group)
            else:
                g = next((j for j in range(1, d.rx.groups + 1) if m.group(j)), 0)
                a, b = m.span(g)
                while a < b and s[a] in _DS_STRIP:
                    a += 1
                while b > a and s[b - 1] in _DS_STRIP:
                    b -= 1
                if s.startswith("AccountKey=", a):
                    a += len("AccountKey=")
                if b - a < 8:
                    continue
            value = s[a:b]
            if _placeholder_token(value):
                continue
            if d.check is None or d.check(value):
                out.append((base + a, base + b, d.kind))

    if "://" in s:
        for m in _URL_CREDS.finditer(s):
            pw = m.group("pw")
            # user == password is a stock demo login (postgres:postgres, guest:guest)
            if pw != m.group("user") and "," not in pw and _plausible_value(pw, "password",
                                                                             "password"):
                out.append((base + m.start("pw"), base + m.end("pw"), "url_credentials"))

    for m in _ASSIGN_QUOTED.finditer(s) if ('"' in s or "'" in s or "`" in s) else ():
        q = "dq" if m.group("dq") is not None else "sq" if m.group("sq") is not None else "bq"
        value, key = m.group(q), m.group("key")
        if not value:
            continue
        before = s[: m.start()].rstrip()
        if before.endswith("?"):  # `c ? password : "x"` is a ternary
            continue
        if before.endswith(",") and m.group("sp") and m.group("op") == "=":
            continue  # `user, password = "u", "p"`: the first value is not the password's
        pfx = m.group("pfx") or ""
        if "r" in pfx.lower() and "\\" in value:
            continue  # a raw string with backslashes is a regular expression
        cls = _key_class(key)
        if cls and _plausible_value(value, key, cls):
            out.append((base + m.start(q), base + m.end(q), "password_assignment"))
        elif (len(value) >= 20 and _high_entropy(value)
              and not _DIGEST_NAME.search(_norm_key(key))):
            out.append((base + m.start(q), base + m.end(q), "high_entropy_string"))

    if at_line_start:
        m = _ASSIGN_LINE.match(s)
        if m:
            key, value = m.group("key"), m.group("val")
            cls = _key_class(key)
            # .env: NAME=value with no spaces; there even a bare word is the value itself
            env_style = (m.group("op") == "=" and not m.group("sp1") and not m.group("sp2")
                         and key.upper() == key)
            if cls and _plausible_value(value, key, cls) and _unquoted_ok(value, env_style):
                out.append((base + m.start("val"), base + m.end("val"), "password_assignment"))


def _windows(text: str, blank_separator: bool = False) -> list[tuple[int, int, bool]]:
    """The line (or, in very long lines, the stretch) around every trigger hit, merged:
    (start, end, whether start is the start of a line). `blank_separator`: also keys followed
    by blanks and a value (.properties: `db.password s3cret`)."""
    hits: list[int] = []
    for rx in _TRIGGERS_CASED:
        hits += [m.start() for m in rx.finditer(text)]
    low = text.lower()
    if len(low) != len(text):  # some non-ASCII characters lowercase to two; keep offsets
        low = text.translate(_ASCII_LOWER)
    for rx in _TRIGGERS_LOWER + (_TRIGGERS_BLANK if blank_separator else []):
        hits += [m.start() for m in rx.finditer(low)]
    if not hits:
        return []
    hits.sort()
    spans: list[list] = []  # [start, end, end of its line, at line start]
    for p in hits:
        if spans and p < spans[-1][1]:
            last = spans[-1]
            if p + _WINDOW_AFTER > last[1]:
                last[1] = _window_end(text, p, last[2])
            continue
        ls = text.rfind("\n", 0, p) + 1
        le = text.find("\n", p)
        if le < 0:
            le = len(text)
        if le - ls > _MAX_LINE:
            ws, we = max(ls, p - _WINDOW_BEFORE), _window_end(text, p, le)
        else:
            ws, we = ls, le
        if spans and ws <= spans[-1][1]:
            spans[-1][1], spans[-1][2] = we, le
        else:
            spans.append([ws, we, le, ws == ls])
    return [(ws, we, at_ls) for ws, we, _, at_ls in spans]


_DELIMITER = re.compile(r"""[\s"'`,;<>]""")


def _window_end(text: str, p: int, line_end: int) -> int:
    """Where a window opened at `p` in a long line closes: past `_WINDOW_AFTER`, at the next
    delimiter, so that a long token (a JWT can take kilobytes) is never cut in two."""
    end = p + _WINDOW_AFTER
    if end >= line_end:
        return line_end
    m = _DELIMITER.search(text, end, min(line_end, end + 8192))
    return m.start() if m else min(line_end, end + 8192)
