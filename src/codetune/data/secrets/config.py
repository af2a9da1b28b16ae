"""Configuration files: which paths are configuration (`file_format`), the value after a
secret-sounding key as a literal (`_config_line`, run on the trigger windows), and a secret
variable's name and value on consecutive lines (`_name_value_pairs`: Kubernetes and Compose
env lists, ECS task definitions), with the value rules they share (`_literal_ok`)."""

from __future__ import annotations

import os
import re

from codetune.data.secrets.assignments import (
    _DUMMIES,
    _NUMBER,
    _WORDLIKE,
    _key_class,
    _norm_key,
)

# --------------------------------------------------------------------------------------------
# Which files are configuration. In these the text after `key:` / `key =` is the value itself,
# whatever it looks like; in code an unquoted word is a variable.

_CONFIG_EXT = {
    ".yaml": "yaml", ".yml": "yaml", ".ini": "ini", ".cfg": "ini", ".conf": "ini",
    ".cnf": "ini", ".toml": "toml", ".properties": "properties", ".env": "env",
}
_CONFIG_NAMES = {".pypirc": "ini", ".npmrc": "ini", ".envrc": "env", ".env": "env"}
# A copy or template of a configuration file is one too: `config.yaml.example`, `.env.sample`
_COPY_SUFFIX = frozenset({".example", ".sample", ".dist", ".template", ".tmpl", ".tpl", ".j2",
                          ".jinja", ".local", ".bak", ".orig", ".default", ".in"})
# Translations (`config/locales/de.yml`: `password: Passwort`) are labels, not settings.
_LOCALE_DIR = re.compile(r"(?:^|/)(?:locales?|i18n|l10n|translations?|lang)/", re.IGNORECASE)

# Where a command line's `--password word` is an argument, not prose (`_shellish`).
_SHELL_EXT = frozenset({".sh", ".bash", ".zsh", ".ksh", ".fish", ".mk", ".ps1", ".bat", ".cmd",
                        ".dockerfile", ".envrc"})
_SHELL_NAMES = re.compile(r"(?:GNU)?[Mm]akefile|(?:Docker|Container)file(?:\..*)?|Jenkinsfile"
                          r"|[Jj]ustfile|Procfile|.*\.dockerfile")


def file_format(path: str | None) -> str | None:
    """'yaml', 'ini', 'toml', 'properties' or 'env' when `path` names a configuration file
    (by extension or name: `.env`, `.env.production`, `docker-compose.yml`, ...), else None."""
    if not path:
        return None
    norm = path.replace("\\", "/")
    name = norm.rsplit("/", 1)[-1]
    low = name.lower()
    if low in _CONFIG_NAMES:
        return _CONFIG_NAMES[low]
    if low.startswith(".env."):
        return "env"
    stem, ext = os.path.splitext(low)
    if ext in _COPY_SUFFIX and stem:
        stem, ext = os.path.splitext(stem)
    fmt = _CONFIG_EXT.get(ext)
    if fmt == "yaml" and _LOCALE_DIR.search(norm):
        return None
    return fmt


def _shellish(path: str | None, fmt: str | None) -> bool:
    """Shell scripts, Makefiles, Dockerfiles, and configuration files (`fmt`: CI YAML and
    Compose hold command lines): there `--password word` passes `word`."""
    if fmt is not None:
        return True
    if not path:
        return False
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return os.path.splitext(name)[1].lower() in _SHELL_EXT or bool(_SHELL_NAMES.fullmatch(name))


# --------------------------------------------------------------------------------------------
# What counts as a literal credential in a configuration file (or a command line). Templates,
# references, empty values and placeholders are left alone; everything else after a secret
# key is a value somebody typed, words included (`password: hunter`).

_REFERENCE = re.compile(
    r"\$\{|\$\(|^\$\$?[A-Za-z_]\w*$|\{\{|\{%|%\(\w+\)|^%[\w.()-]+%$|^<.*>$|^@[\w.-]+@$|#\{"
    r"|^@[A-Z][A-Z0-9_]*@?$|^\{[\w.-]*\}$"  # `@DB_PASSWORD`, `{JWT_SECRET_KEY}`
    r"|<SECRET>|^\*+$|^x+$|^\.+$|^-+$|^_+$|^\?+$|\.\.\.|…"
    r"|^your[-_ ]|^my[-_]?(?:secret|password|pass|token|key)$|^(?:\w+[-_])?(?:here|placeholder)$"
    r"|^(?:change|replace|fill|set|update|insert|put)[-_ ]?(?:me|this|it)\b"
    r"|^(?:secretKeyRef|valueFrom|configMapKeyRef)\b|^os\.environ/|^env:[A-Za-z_]",
    re.IGNORECASE,
)
# Placeholders and the words a schema or a form writes where a value would go. Not the stock
# weak passwords (`hunter2`, `letmein`, `admin`): in a configuration file those are real.
_PLACEHOLDERS = (_DUMMIES - {"hunter2", "secret123", "password123", "letmein", "qwerty",
                             "admin"}) | {
    "string", "str", "text", "integer", "int", "bool", "boolean", "required", "optional",
    "sensitive", "secretstr", "unset", "nothing", "blank", "redact", "omit", "omitted",
    "dummy", "generated", "random", "auto", "inherit", "env", "environment", "prompt", "ask",
    "stdin", "file", "none", "xxxxxx", "changeme123",
}
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_ENV_REF = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")  # the name of a variable, not a value
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_PATH = re.compile(r"(?:~|\.\.?)?/[\w.@-]+/[\w./@-]*|(?:~|\.\.?)/[\w./@-]+|[A-Za-z]:\\.*")
# Labels and messages (`password_confirmation: Confirm password`): only words, several.
_PROSE = re.compile(r"[A-Za-z][A-Za-z'’-]*[.,:;!?]?(?:[ \t]+[A-Za-z][A-Za-z'’-]*[.,:;!?]?)+")


def _literal_ok(value: str, key: str, cls: str) -> bool:
    """Whether `value`, written after the secret-sounding `key` in a configuration file or on a
    command line, is a credential: anything typed there, less what reads as a template, a
    reference, a placeholder, a path or URL, or a label. Under a token/key name a plain word or
    a number is a setting (`secrets: inherit`, `tokens: 4096`), not a token."""
    if len(value) < 4 or len(set(value)) < 3 or not any(c.isalnum() for c in value):
        return False
    if _REFERENCE.search(value) or _ENV_REF.fullmatch(value):
        return False
    if _URL.fullmatch(value) or _PATH.fullmatch(value):
        return False
    low = value.lower()
    simple = _NON_ALNUM.sub("", low)
    if low in _PLACEHOLDERS or simple in _PLACEHOLDERS:
        return False
    name = _norm_key(key).replace("_", "")
    if simple == name or (name.endswith(simple) and len(simple) >= 4):  # `password: Password`
        return False
    if any(c.isspace() for c in value) and _PROSE.fullmatch(value) and "phrase" not in name:
        return False  # a passphrase of plain words is a miss we accept, except under its name
    # `js-tokens: 4.0.0` (a lock file), `tokens: 4096`, `id-token: write`, `secrets: inherit`
    return not (cls == "token" and (_WORDLIKE.fullmatch(value) or _NUMBER.fullmatch(value)
                                    or not any(c.isalpha() for c in value)))


# --------------------------------------------------------------------------------------------
# One line of a configuration file: `key: value`, `key = value`, `- KEY=value`, `export
# KEY=value`, `key value` (.properties), also commented out (`# password: x`). Runs on the
# windows that start a line (a trigger saw a secret-sounding key there).

_LINE_HEAD = re.compile(
    r"[ \t]*(?P<comment>(?:#|;|//)[ \t]*)?(?P<dash>-[ \t]+)?(?:export[ \t]+)?"
    r"(?P<kq>[\"']?)(?P<key>[A-Za-z_][\w.-]{0,100})(?P<kq2>[\"']?)"
    r"(?P<sep>[ \t]*(?:=>|=(?!=)|:)[ \t]*|[ \t]+)"  # not `==`: a comparison
)
_BLOCK = re.compile(r"[|>][-+0-9]{0,3}[ \t]*(?:#.*)?")
_TAG = re.compile(r"!!?[\w/:.-]*")
_ANCHOR = re.compile(r"&\S+[ \t]*")
_YAML_COMMENT = re.compile(r"[ \t]#")
_KEY_LINE = re.compile(r"[ \t]*(?:-[ \t]|[\"']?[\w.$/-]+[\"']?[ \t]*:(?:[ \t]|$)|#|\.\.\.|---)")

Spans = list[tuple[int, int]]


def _config_line(text: str, ls: int, le: int, fmt: str, out: list[tuple[int, int, str]]) -> None:
    """Append the value of the line `text[ls:le]` when its key sounds secret."""
    m = _LINE_HEAD.match(text, ls, le)
    if not m:
        return
    key, kq, kq2, sep = m.group("key"), m.group("kq"), m.group("kq2"), m.group("sep")
    item_quote = ""
    if kq and kq2 != kq:
        if kq2 or not m.group("dash") or "=" not in sep:
            return
        item_quote = kq  # `- "DB_PASSWORD=value"`: the item's quotes close the value
    elif kq2 and not kq:
        return
    op = sep.strip()
    if not op and fmt != "properties":
        return  # `key value` is a key/value pair only in .properties
    if op == ":" and fmt == "yaml" and not sep.endswith((" ", "\t")) and m.end() < le:
        return  # `a:b` is one YAML scalar
    cls = _key_class(key)
    if cls is None:
        return
    commented = m.group("comment") is not None
    indent = m.start("dash") if m.group("dash") else m.start("kq")
    for a, b in _value_spans(text, m.end(), le, fmt, key, cls, item_quote,
                             indent - ls, not commented):
        out.append((a, b, "password_assignment"))


def _value_spans(text: str, vs: int, le: int, fmt: str, key: str, cls: str, item_quote: str,
                 indent: int, multiline: bool) -> Spans:
    """The spans of the literal value that starts at `vs` (its line ends at `le`), or []."""
    while le > vs and text[le - 1] in " \t\r":
        le -= 1
    rest = text[vs:le]
    if item_quote:
        end = rest.find(item_quote)
        if end >= 0:
            rest, le = rest[:end], vs + end
    if not rest or (fmt in ("yaml", "toml", "env") and rest.startswith("#")):
        return _next_lines(text, le, indent, key, cls) if multiline and fmt in ("yaml", "ini") \
            else []
    first = rest[0]
    if first in "\"'" and not item_quote:
        return _quoted(text, vs, le, fmt, key, cls)
    if fmt == "yaml":
        if first == "&":  # an anchor names the value that follows it
            m = _ANCHOR.match(text, vs, le)
            return _value_spans(text, m.end(), le, fmt, key, cls, "", indent, multiline)
        if first == "*" and not rest.startswith("**"):
            return []  # an alias of another node
        if first == "!":
            m = _TAG.match(text, vs, le)
            after = text[m.end():le]
            if after[:1] in (" ", "\t") or not after:  # a tag, not a value beginning with "!"
                if m.group(0) in ("!!str", "!str", "!!binary"):
                    return _value_spans(text, m.end() + len(after) - len(after.lstrip()), le,
                                        fmt, key, cls, "", indent, multiline)
                return []  # `!vault |`, `!ENV ${X}`, `!Ref DbPassword`: a reference
        if _BLOCK.fullmatch(rest):
            return _block(text, le, indent, key, cls) if multiline else []
        if first in "[{":
            return []  # a flow collection: structure, not one value
    if fmt == "toml" and first in "[{":
        return []
    if fmt in ("yaml", "toml", "env"):
        c = _YAML_COMMENT.search(rest)
        if c:
            rest = rest[: c.start()].rstrip()
            le = vs + len(rest)
    if _literal_ok(rest, key, cls):
        return [(vs, le)]
    return []


def _quoted(text: str, vs: int, le: int, fmt: str, key: str, cls: str) -> Spans:
    q = text[vs]
    i = vs + 1
    while i < le:
        c = text[i]
        if c == "\\" and q == '"':
            i += 2
            continue
        if c == q:
            if q == "'" and fmt == "yaml" and text.startswith("''", i):
                i += 2
                continue
            break
        i += 1
    value = text[vs + 1:min(i, le)]
    return [(vs + 1, vs + 1 + len(value))] if value and _literal_ok(value, key, cls) else []


def _lines_after(text: str, pos: int, indent: int):
    """(start, end, text) of the lines after `pos` indented deeper than `indent`, blank
    lines included, up to the first line that is not."""
    while pos < len(text):
        ls = pos + 1
        le = text.find("\n", ls)
        if le < 0:
            le = len(text)
        line = text[ls:le]
        if line.strip() and len(line) - len(line.lstrip(" \t")) <= indent:
            return
        yield ls, le, line
        pos = le


def _block(text: str, le: int, indent: int, key: str, cls: str) -> Spans:
    """A YAML block scalar (`password: |`): its lines are the value."""
    spans = [(ls + len(line) - len(line.lstrip()), ls + len(line.rstrip()))
             for ls, _, line in _lines_after(text, le, indent) if line.strip()]
    value = "\n".join(text[a:b] for a, b in spans)
    return spans if spans and not _REFERENCE.search(value) else []


def _next_lines(text: str, le: int, indent: int, key: str, cls: str) -> Spans:
    """`password:` with the value on the lines below (a YAML plain scalar continued, or an
    ini value on continuation lines): not when they are a mapping, a list or a comment."""
    spans = []
    for ls, _, line in _lines_after(text, le, indent):
        if not line.strip():
            continue
        if not spans and (_KEY_LINE.match(line) or line.lstrip()[:1] in "!&*|>[{\"'%@`"):
            return []
        spans.append((ls + len(line) - len(line.lstrip()), ls + len(line.rstrip())))
    value = " ".join(text[a:b] for a, b in spans)
    return spans if spans and _literal_ok(value, key, cls) else []


# --------------------------------------------------------------------------------------------
# A secret variable named on one line and valued on the next (or beside it):
#     - name: DB_PASSWORD            {"name": "DB_PASSWORD", "value": "..."}
#       value: <v>
# (not `valueFrom:`: the `value` key must be followed by its operator). Both orders. Quoted
# values count in any file (the structure says what they are); unquoted ones in configuration.

# Between the two: a comma, a comment (after a blank: `a#b` is a YAML value), a line break,
# blank and comment lines, a list item's dash.
_SEP = (r"""[ \t]*,?[ \t]*(?:(?<=[ \t])#[^\n]*)?"""
        r"""(?:\r?\n(?:[ \t]*(?:#[^\n]*)?\r?\n)*[ \t]*(?:-[ \t]+)?)?""")
_NAME = r"""name["']?[ \t]*[:=][ \t]*(?P<q>["']?)(?P<key>[A-Za-z_][\w.-]{0,100})(?P=q)"""
# One pass over the text finds the `value` keys (a literal: fast); the name is then looked for
# just before (ending where the value starts) or just after.
_VALUE_KEY = re.compile(r"""value["']?[ \t]*[:=][ \t]*""")
_NAME_THEN_VALUE = re.compile(_NAME + _SEP + r"""["']?value["']?[ \t]*[:=][ \t]*\Z""")
_VALUE_THEN_NAME = re.compile(
    r"""value["']?[ \t]*[:=][ \t]*(?P<val>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s"',{}\[\]#][^\n,}]*?)"""
    + _SEP + _NAME
)
_FLOW_END = re.compile(r"[,}]")
_LOOK_BACK = 400  # characters before `value` searched for its `name`


def _after_word(text: str, i: int) -> bool:
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")


def _name_value_pairs(text: str, fmt: str | None, out: list[tuple[int, int, str]]) -> None:
    for v in _VALUE_KEY.finditer(text):
        vk = v.start()
        if vk and text[vk - 1] in "\"'":
            vk -= 1
        if not _after_word(text, vk):
            continue
        ws = max(0, vk - _LOOK_BACK)
        m = _NAME_THEN_VALUE.search(text, ws, v.end()) if "name" in text[ws:vk] else None
        if m and _after_word(text, m.start()) and (cls := _key_class(m.group("key"))):
            vs = v.end()
            le = text.find("\n", vs)
            le = len(text) if le < 0 else le
            if text.rfind("{", text.rfind("\n", 0, m.start()) + 1, m.start()) >= 0 \
                    and text[vs:vs + 1] not in ("'", '"'):
                stop = _FLOW_END.search(text, vs, le)  # `{name: X, value: v}`
                le = stop.start() if stop else le
            out += [(a, b, "password_assignment")
                    for a, b in _pair_value(text, vs, le, fmt, m.group("key"), cls)]
            continue
        m = _VALUE_THEN_NAME.match(text, v.start())
        if m and (cls := _key_class(m.group("key"))):
            a, b = m.span("val")
            while b > a and text[b - 1] in " \t\r":
                b -= 1
            out += [(x, y, "password_assignment")
                    for x, y in _pair_value(text, a, b, fmt, m.group("key"), cls)]


def _pair_value(text: str, vs: int, le: int, fmt: str | None, key: str, cls: str) -> Spans:
    if vs >= le:
        return []
    if text[vs] in "\"'":
        return _quoted(text, vs, le, fmt or "json", key, cls)
    if fmt is None:
        return []  # `value = var.db_password`: a reference in code
    line_start = text.rfind("\n", 0, vs) + 1
    line = text[line_start:vs]
    indent = len(line) - len(line.lstrip(" \t-"))
    return _value_spans(text, vs, le, fmt, key, cls, "", indent, True)
