"""Which names and values count as credentials: the assignment patterns (a quoted literal
after a name; an unquoted value in a .env/ini/YAML line), URL credentials, the vocabularies of
names and dummy values (`_key_class`, `_plausible_value`, `_unquoted_ok`) and the entropy test
behind high_entropy_string."""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections import Counter

# --------------------------------------------------------------------------------------------
# Assignments.

_ASSIGN_QUOTED = re.compile(
    r"""(?<![\w.$@-])(?P<key>[A-Za-z_$@][\w.$@-]{0,100}+)(?P<close>["'`]?\]?)"""
    r"""(?::[ \t]*[A-Za-z_][\w.\[\], |]{0,60}?)?"""  # a type annotation: `pw: str = "x"`
    r"""(?P<sp>[ \t]*)(?P<op>=>|:=|=(?!=)|:(?!:))[ \t]*"""
    # `x = ("value")`: a parenthesised literal, but not the first item of a tuple
    r"""(?P<paren>\([ \t]*)?(?P<pfx>@|[rRbBuUfF]{1,2})?"""
    r"""(?:"(?P<dq>(?:[^"\\\n]|\\.)*+)"|'(?P<sq>(?:[^'\\\n]|\\.)*+)'|`(?P<bq>(?:[^`\\\n]|\\.)*+)`)"""
    r"""(?(paren)(?=[ \t]*\)))"""
)

# .env / ini / YAML lines: `KEY=value`, `export KEY=value`, `key = value`, `key: value`
_ASSIGN_LINE = re.compile(
    r"""[ \t]*(?:(?:export|ENV|ARG|set)[ \t]+)?(?:-[ \t]+)?"""
    r"""(?P<key>[A-Za-z_][\w.-]{0,100})(?P<sp1>[ \t]*)(?P<op>=|:)(?P<sp2>[ \t]*)"""
    r"""(?P<val>[^\s'"`]\S*)(?:[ \t]+#.*)?\s*$"""
)

_URL_CREDS = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://(?P<user>[^\s:/?#@\"'`<>\[\]]*):(?P<pw>[^\s/?#@\"'`<>]+)@"
    r"(?=[\w\[.%{$-])"
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_KEY_SPLIT = re.compile(r"->|[.$@:]")
_PW_KW = re.compile(r"pass(?:word|wd|phrase|wort)|pwd|(?:^|_)pass$")
_SECRET_KW = re.compile(
    r"secret(?:s|_?key)?(?=_|$)|tokens?(?=_|$)|credentials?(?=_|$)"
    r"|(?:api|auth|access|priv|private|client|service|account|db|database|signing|encryption"
    r"|master|session|app|consumer|license|subscription)_?key(?=_|$)"
)
# Words in a name, after the keyword, that make it about a secret rather than the secret.
_META_AFTER = frozenset({
    "url", "uri", "urls", "endpoint", "endpoints", "host", "path", "paths", "file", "files",
    "filename", "dir", "directory", "name", "names", "type", "types", "kind", "field", "fields",
    "label", "labels", "prompt", "header", "headers", "policy", "regex", "re", "pattern",
    "patterns", "env", "var", "vars", "variable", "length", "len", "size", "count", "format",
    "fmt", "template", "prefix", "suffix", "param", "params", "attr", "attribute", "class",
    "mode", "method", "source", "provider", "placeholder", "help", "msg", "message", "messages",
    "text", "title", "description", "desc", "error", "errors", "key", "keys", "column", "col",
    "table", "cookie", "list", "set", "validator", "validators", "expires", "expiry",
    "expiration", "ttl", "timeout", "lifetime", "age", "version", "algorithm", "alg", "algo",
    "scheme", "scope", "scopes", "audience", "issuer", "style", "char", "chars", "separator",
    "sep", "delimiter", "arn", "location", "loc", "store", "storage", "manager", "ref",
    "reference", "hint", "input", "widget", "form", "view", "route", "page", "link", "button",
    "id", "ids", "idx", "index", "limit", "max", "min", "num", "position", "pos", "start", "end",
    "begin", "offset", "mechanism",
})
# Words before the keyword that make it a flag, a counter or a tokenizer's special token.
_META_BEFORE = frozenset({
    "is", "has", "use", "uses", "using", "show", "hide", "enable", "enabled", "disable",
    "disabled", "require", "requires", "required", "num", "n", "max", "min", "count", "forgot",
    "reset", "validate", "verify", "check", "no", "allow", "allowed", "public", "pad", "eos",
    "bos", "unk", "sep", "cls", "mask", "start", "end", "stop", "special", "image", "audio",
    "video", "vision", "begin", "eot", "eom", "tool", "think", "update",
})
_DUMMIES = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token", "tokens",
    "apikey", "api_key", "key", "changeme", "changeit", "example", "sample", "dummy", "fake",
    "placeholder", "redacted", "hidden", "masked", "none", "null", "nil", "undefined", "true",
    "false", "yes", "no", "on", "off", "default", "test", "testing", "foo", "bar", "baz",
    "foobar", "qwerty", "letmein", "admin", "empty", "notset", "todo", "tbd", "fixme", "value",
    "hunter2", "secret123", "password123",
})
_TEMPLATE = re.compile(
    r"\{[^{}]*\}|\$\{|\$\(|^\$[A-Za-z_]\w*$|%[-#0 +]*\d*(?:\.\d+)?[sdifrxXeEgGcboup]|%\(\w+\)"
    r"|\{\{|^<.*>$|^\[.*\]$|^#\{|<SECRET>|^\*+$|^x+$|^\.+$|^-+$|^your[-_ ]|\.\.\.|…"
    r"|^[\w.]+\(.*\)$"  # a call, e.g. `get_token()` quoted in a docstring
    r"|^my[-_]?(?:secret|password|token|key)|^(?:\w+[-_])?(?:here|placeholder)$",
    re.IGNORECASE,
)
# A regular expression, e.g. `token_re = r"[A-Za-z_]\w*"`.
_REGEX_LIKE = re.compile(r"\\[wdsWDSbBAZ]|\(\?[:=!<P]|\[\^|[\])][*+?]|\{\d+(?:,\d*)?\}")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{2,}")
_URL_OR_PATH = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://\S*|(?:/|~/|\.\.?/)[\w./-]*|[A-Za-z]:\\[\w.\\ -]*"
)
_WORDLIKE = re.compile(
    r"(?:[a-z]+|[A-Z]+|[A-Z][a-z]+)(?:[-_.:](?:[a-z]+|[A-Z]+|[A-Z][a-z]+))*"
)
_NUMBER = re.compile(
    r"[-+]?(?:0[xXoObB][\da-fA-F_]+|[\d_]*\.?[\d_]+(?:[eE][-+]?\d+)?)[jJlLuUfF]?"
)
_IDENT = re.compile(r"[A-Za-z_][\w.]*")

# Names whose long hex/base64 values are digests, ids and test vectors, not secrets.
_DIGEST_NAME = re.compile(
    r"hash|digest|sha\d|md5|checksum|fingerprint|uuid|guid|commit|nonce|expected|integrity"
    r"|(?:^|_)(?:sha|crc\d*|rev|revision|etag|want|vectors?|samples?|examples?|tests?|fixtures?"
    r"|magic|signatures?|sig|oid|iv|ids?)(?=_|$|\d)"
)
# Alphabets and keyboard rows have high entropy but are the opposite of random.
_SEQUENCE = re.compile("|".join(
    run[i:i + 5]
    for seq in ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm")
    for run in (seq, seq[::-1])
    for i in range(len(run) - 4)
))
# Hex of these lengths is a digest or an id far more often than a secret: object ids, md5 and
# uuid, sha1 and git objects, sha224/256/384/512.
_DIGEST_LENGTHS = frozenset({24, 32, 40, 56, 64, 96, 128})
_PRINTABLE = frozenset(range(32, 127)) | {9, 10, 13}


@functools.lru_cache(maxsize=8192)  # names repeat (`password`, `DB_PASSWORD`): pure functions
def _norm_key(key: str) -> str:
    """The last component of a name, snake_case: `self.dbPassword` -> `db_password`."""
    last = _KEY_SPLIT.split(key.strip("'\"`[]"))[-1]
    return _CAMEL.sub("_", last).lower().replace("-", "_")


@functools.lru_cache(maxsize=8192)
def _key_class(key: str) -> str | None:
    """'password' or 'token' when a name says its value is a credential, else None."""
    nk = _norm_key(key)
    hits = [(m, "password") for m in _PW_KW.finditer(nk)]
    hits += [(m, "token") for m in _SECRET_KW.finditer(nk)]
    if not hits:
        return None
    first = min(m.start() for m, _ in hits)
    last, cls = max(hits, key=lambda h: h[0].end())
    if set(nk[last.end():].split("_")) & _META_AFTER or set(nk[:first].split("_")) & _META_BEFORE:
        return None
    return cls


def _plausible_value(value: str, key: str, cls: str) -> bool:
    """Whether a literal assigned to a secret-sounding name looks like a real credential."""
    if len(value) < (4 if cls == "password" else 8):
        return False
    if any(c.isspace() for c in value) or len(set(value)) < 3:
        return False
    if not any(c.isalnum() for c in value):
        return False
    if (_TEMPLATE.search(value) or _ENV_NAME.fullmatch(value) or _URL_OR_PATH.fullmatch(value)
            or _REGEX_LIKE.search(value)):
        return False
    low = value.lower()
    simple = re.sub(r"[^a-z0-9]", "", low)
    name = _norm_key(key).replace("_", "")
    # the value spells its own name: `password = "password1"`, `token = "my_token"`
    if low in _DUMMIES or simple in _DUMMIES or (len(name) >= 4 and name in simple):
        return False
    if cls == "token" or name == "pass":  # a bare `pass` key is too often a plain word
        return not _WORDLIKE.fullmatch(value)
    return True


def _unquoted_ok(value: str, env_style: bool) -> bool:
    """An unquoted value is code, not a credential, when it is a number, a call, an index, a
    statement or (outside .env files) a variable name. A name-shaped value with digits inside
    its words (`Tr0ub4dor3xq`) is no name anyone writes: that is a YAML or ini password."""
    if value[0] in "$%{[(<!&*|>@\\~-#" or value.endswith(":"):
        return False
    if any(c in value for c in "()[]{};,\\") or _NUMBER.fullmatch(value):
        return False
    return env_style or not _IDENT.fullmatch(value) or _leet(value)


# Two or more digit runs inside one word of a name: `Tr0ub4dor3xq`, `s3cr3t`, but not
# `base64Password`, `sha256_digest`, `utf8`, `md5hash`, `x86_64` (one run, or at a word's end).
_WORD_PART = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
_INNER_DIGITS = re.compile(r"(?<=[A-Za-z])\d+(?=[A-Za-z])")


def _leet(value: str) -> bool:
    return any(len(_INNER_DIGITS.findall(w)) >= 2 for w in _WORD_PART.findall(value))


def _shannon(data: str) -> float:
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


_B64_CHARS = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
_HEX_CHARS = re.compile(r"[0-9a-fA-F]+")


def _high_entropy(value: str) -> bool:
    """detect-secrets' entropy test, minus the shapes that are random-looking but public."""
    if not _B64_CHARS.fullmatch(value) or _SEQUENCE.search(value.lower()):
        return False
    if _HEX_CHARS.fullmatch(value):
        if len(value) in _DIGEST_LENGTHS or len(value) > 128:  # > 512 bits: a table, not a key
            return False
        entropy = _shannon(value)
        if value.isdigit():  # detect-secrets' penalty: long numbers are seldom secrets
            entropy -= 1.2 / math.log2(len(value))
        return entropy > 3.0
    if "/" in value and ("-" in value or "_" in value):
        return False  # both base64 alphabets at once: a path or model id such as `org/my-model`
    if _shannon(value) <= 4.5:
        return False
    try:  # base64 of text (an encoded message, a doc example) is not random
        raw = base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        return True
    return len(raw) < 8 or not set(raw) <= _PRINTABLE
