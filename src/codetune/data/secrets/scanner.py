"""`scan` and `redact`: the line scan, private keys, curl credentials and the joined view
put together, overlapping detections merged into one `Finding` each, values masked for the
report."""

from __future__ import annotations

import re
from dataclasses import dataclass

from codetune.data.secrets.assignments import _NUMBER, _plausible_value
from codetune.data.secrets.commands import _command_line_credentials, _pair_args
from codetune.data.secrets.config import _config_line, _name_value_pairs, _shellish, file_format
from codetune.data.secrets.joined import _scan_joined, _Spans
from codetune.data.secrets.windows import _scan_window, _windows

__all__ = ["Finding", "redact", "scan"]


@dataclass(frozen=True)
class Finding:
    line: int  # 1-based line of `start`
    kind: str  # short slug, e.g. "aws_access_key", "password_assignment"
    start: int  # offset in the scanned text where the secret value starts
    end: int  # offset just past its end
    masked: str  # printable: at most 4 leading characters of the value, then its length
    # A secret split over several string literals (`"ghp_ab" "cd..."`): each physical piece as
    # (start, end), in order, from `start` to `end`; empty when the secret is the one span.
    pieces: tuple[tuple[int, int], ...] = ()


# --------------------------------------------------------------------------------------------
# Private keys: a header, then something that looks like key material, so that a constant
# holding just the header line is not taken for a key and everything after it deleted.

_PK_BEGIN = re.compile(r"-{4,5} ?BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
_PK_BODY = re.compile(r"""(?:\s|\\[nr]|["'`+,(]){0,40}"""
                      r"(?:[A-Za-z0-9+/=]{16}|Proc-Type:|Comment:|Version:)")
_PK_END = re.compile(r"-{4,5} ?END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}")


def _private_keys(text: str, out: list[tuple[int, int, str]]) -> None:
    pos = 0
    while m := _PK_BEGIN.search(text, pos):
        if not _PK_BODY.match(text, m.end()):
            pos = m.end()
            continue
        end = _PK_END.search(text, m.end())
        stop = end.end() if end else len(text)  # unterminated: the rest is key material
        out.append((m.start(), stop, "private_key"))
        pos = stop


# `curl -u user:password`, `--user user:password` (also after backslash continuations): the
# password is the secret. `-u 1000:1000` elsewhere (docker) is a uid:gid: only after curl.
_CURL_USER = re.compile(
    r"curl\b(?:[^\n]|\\\r?\n)*?[ \t](?:-[A-Za-z]*u|--user)(?:[ \t]+|=)(?P<q>['\"]?)"
    r"(?P<user>[^\s:'\"@/]*):(?P<pw>[^\s'\"`;|&)]+)(?P=q)(?=[\s;|&)]|$)"
)


def _curl_credentials(text: str, out: list[tuple[int, int, str]]) -> None:
    for m in _CURL_USER.finditer(text):
        pw = m.group("pw")
        if (pw != m.group("user") and not _NUMBER.fullmatch(pw)
                and _plausible_value(pw, "password", "password")):
            out.append((m.start("pw"), m.end("pw"), "basic_auth"))


_GENERIC_RANK = {"authorization_header": 1, "url_credentials": 1, "command_line_password": 2,
                 "password_assignment": 2, "high_entropy_string": 3}


def _mask(value: str, kind: str) -> str:
    if kind == "private_key":
        m = _PK_BEGIN.match(value)
        if m:  # the header says what it is and is not secret
            return f"{m.group(0)}…({len(value)} chars)"
    return f"{value[: min(4, len(value) // 4)]}…({len(value)} chars)"


def _merge(raw: list[tuple[_Spans, str]]) -> list[tuple[_Spans, str]]:
    """Detections sharing a character become one, covering all their spans and named by the
    widest (in characters of secret); on a tie a specific kind beats a generic one. A split
    secret joins the line-level detection of any of its pieces."""
    parent = list(range(len(raw)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cluster_end, rep = -1, 0
    for a, b, i in sorted((a, b, i) for i, (spans, _) in enumerate(raw) for a, b in spans):
        if a < cluster_end:
            parent[root(i)] = root(rep)
            cluster_end = max(cluster_end, b)
        else:
            cluster_end, rep = b, i
    groups: dict[int, list[int]] = {}
    for i in range(len(raw)):
        groups.setdefault(root(i), []).append(i)

    def rank(i: int) -> tuple[int, int]:
        return (sum(b - a for a, b in raw[i][0]), -_GENERIC_RANK.get(raw[i][1], 0))

    merged = []
    for members in groups.values():
        spans: list[list[int]] = []
        for a, b in sorted(sp for i in members for sp in raw[i][0]):
            if spans and a <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], b)
            else:
                spans.append([a, b])
        merged.append((tuple((a, b) for a, b in spans), raw[max(members, key=rank)][1]))
    merged.sort()
    return merged


def scan(text: str, path: str | None = None) -> list[Finding]:
    """Every secret in `text`, sorted by start; no two findings share a character.

    `path` (the file's path; optional) turns on the rules of configuration files (YAML, ini,
    TOML, .properties, .env: `file_format`), where an unquoted value after a secret-sounding
    key is a literal, and reads `--password word` in scripts as an argument."""
    fmt = file_format(path)
    raw: list[tuple[int, int, str]] = []
    windows = _windows(text, fmt == "properties")
    shellish = _shellish(path, fmt)
    for ws, we, at_line_start in windows:
        _scan_window(text[ws:we], ws, at_line_start, raw)
        if fmt is not None and at_line_start:
            _config_line(text, ws, we, fmt, raw)
        _pair_args(text, ws, we, shellish, raw)
    if "PRIVATE KEY" in text:
        _private_keys(text, raw)
    if "curl" in text:
        _curl_credentials(text, raw)
    if "-" in text:
        _command_line_credentials(text, shellish, raw)
    if "value" in text:
        _name_value_pairs(text, fmt, raw)
    found: list[tuple[_Spans, str]] = [(((a, b),), kind) for a, b, kind in raw]
    if windows:
        _scan_joined(text, windows, raw, found)
    findings = []
    line, counted = 1, 0
    for spans, kind in _merge(found) if found else ():
        a, b = spans[0][0], spans[-1][1]
        line += text.count("\n", counted, a)
        counted = a
        value = "".join(text[x:y] for x, y in spans)
        findings.append(Finding(line, kind, a, b, _mask(value, kind),
                                spans if len(spans) > 1 else ()))
    return findings


def redact(text: str, findings: list[Finding], placeholder: str = "<SECRET>") -> str:
    """`text` with each finding's span (each of its `pieces`, for a split secret) replaced by
    `placeholder`. Findings from `scan` never overlap; overlapping ones from elsewhere share
    one placeholder."""
    parts = []
    pos = 0  # end of the last replaced region
    for start, end in sorted(sp for f in findings for sp in (f.pieces or ((f.start, f.end),))):
        if start < pos:
            pos = max(pos, end)
            continue
        parts += [text[pos:start], placeholder]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)
