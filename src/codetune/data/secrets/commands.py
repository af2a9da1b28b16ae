"""Credentials on command lines: `--password=<v>`, `--token <v>`, `--api-key=<v>`,
`mysql -p<v>`, `docker login -p <v>`, `sshpass -p <v>`, and `-e DB_PASSWORD=<v>` /
`--build-arg` / `--set` / `-D` pairs, in shell scripts, Makefiles, Dockerfiles, CI YAML and
anywhere else a command is quoted (a README, a docstring)."""

from __future__ import annotations

import re

from codetune.data.secrets.assignments import _WORDLIKE, _key_class
from codetune.data.secrets.config import _literal_ok

# A long option whose name ends in a secret word, then `=` or blanks: `--password`,
# `--db-password`, `--api-key`, `--auth-token`, `--client-secret`. `--password-stdin` and
# `--token-file` do not end in one.
# (The name is taken whole, then lookbehinds check its end: ~3x faster than a lazy name
# followed by the keyword.)
_FLAG = re.compile(
    r"--(?P<flag>[A-Za-z0-9][\w-]{0,60}+)(?:"
    + "|".join(f"(?<={k})" for k in ("pass", "passwd", "pwd", "phrase", "word", "secret",
                                     "token", "tokens", "credential", "credentials", "key"))
    + r")(?:(?P<eq>=)|[ \t]+)",
    re.IGNORECASE,
)
_FLAG_END = re.compile(r"(?:pass(?:word|wd|phrase)?|pwd|secret|tokens?|credentials?|key)$")
# Words before the secret word that make a flag a switch, not an option with a value:
# `--ask-pass`, `--ask-vault-pass` (ansible), `--with-token` (gh reads it from stdin).
_SWITCH_BEFORE = frozenset({
    "ask", "with", "without", "print", "generate", "prompt", "read", "save", "store", "skip",
    "hide", "mask", "no", "show", "require", "use", "allow", "keep", "list", "empty",
})
# Tools whose `--password` takes no argument, or only with `=` (`psql --password db` prompts
# and connects to `db`; so does mysql's).
_PROMPTING = re.compile(r"\b(?:psql|pg_\w+|createdb|dropdb|vacuumdb|mysql\w*|mariadb[\w-]*)\b")
# The value: quoted, or up to what ends a shell word.
_UNQUOTED = re.compile(r"[^\s'\"`;|&<>)]+")

# `-p` means the password, attached (`mysql -pS3cret`; a bare `-p` prompts), or for these tools
# also as the next word; elsewhere (`docker run -p 8080:80`, `mkdir -p`) it is not a password.
# Each tool's name is a literal (fast to find); `-p` is then looked for in the rest of its
# command (up to `;`, `|`, `&` or a newline that no backslash continues).
_TOOLS = [  # (literal that must occur, the command, whether `-p VALUE` may have a blank)
    ("mysql", re.compile(r"mysql(?:dump|admin|import|check|show|pump|slap)?(?=[ \t\"'])"), False),
    ("mariadb", re.compile(r"mariadb(?:-?dump|-?admin|-?import|-?check)?(?=[ \t\"'])"), False),
    ("sshpass", re.compile(r"sshpass(?=[ \t])"), True),
    ("login", re.compile(r"login(?=[ \t])"), True),
]
_LOGIN_TOOLS = ("docker", "podman", "buildah", "skopeo", "registry", "oras")
_LOGIN_TOOL = re.compile(r"(?:docker|podman|buildah|skopeo|helm[ \t]+registry|oras)[ \t]+\Z")
_SHORT_P = re.compile(r"(?<=[ \t\"'])-p(?P<sp>[ \t]+)?(?=[^\s-])")  # also exec form: "-pX"
_COMMAND_END = re.compile(r"[;|&]|(?<!\\)\n")


def _short_p(text: str, out: list[tuple[int, int, str]]) -> None:
    for lit, rx, spaced in _TOOLS:
        if lit not in text or (lit == "login" and not any(c in text for c in _LOGIN_TOOLS)):
            continue
        for t in rx.finditer(text):
            a = t.start()
            if a and text[a - 1] not in " \t\n(`\"'/":
                continue
            if lit == "login" and not _LOGIN_TOOL.search(text, max(0, a - 40), a):
                continue
            end = _COMMAND_END.search(text, t.end())
            p = _SHORT_P.search(text, t.end(), end.start() if end else len(text))
            if p is None or (p.group("sp") and not spaced):
                continue  # `mysql -p db`: a bare -p prompts; the next word is the database
            span = _word_value(text, p.end())
            if span and _ok(text[span[0]:span[1]], "password", "password", False, True):
                out.append((*span, "command_line_password"))


# `-e DB_PASSWORD=v` (docker, compose run), `--env`, `--build-arg`, `--set`/`--set-string`
# (helm), `-D` (Java system properties, attached), `--conf` (spark), `--var` (terraform). One
# regex per option, each starting with its own literal and run only when the literal occurs
# (one regex starting with "-" stops at every dash of the text: 10x slower on code).
_PAIR_VALUE = r"""(?P<q>["']?)(?P<key>[A-Za-z_][\w.-]{0,100})="""
_PAIR_ARGS = [(lit, re.compile(re.escape(lit) + tail + _PAIR_VALUE)) for lit, tail in (
    ("-e", r"[ \t]+"), ("--env", r"(?:[ \t]+|=)"), ("--build-arg", r"(?:[ \t]+|=)"),
    ("--set", r"(?:-string)?(?:[ \t]+|=)"), ("--conf", r"(?:[ \t]+|=)"), ("-D", ""),
    ("--var", r"(?:[ \t]+|=)"))]
_BEFORE_OPTION = frozenset(" \t\n\"'[,")


def _word_value(text: str, vs: int) -> tuple[int, int] | None:
    """The span of a shell word's value starting at `vs`: inside its quotes, or unquoted."""
    if vs >= len(text):
        return None
    q = text[vs]
    if q in "\"'":
        end = text.find(q, vs + 1)
        nl = text.find("\n", vs + 1)
        if end < 0 or (0 <= nl < end):
            return None
        return vs + 1, end
    m = _UNQUOTED.match(text, vs)
    return m.span() if m else None


def _ok(value: str, name: str, cls: str, spaced: bool, shellish: bool) -> bool:
    if value.startswith(("-", "\\", "#")) or value.endswith("\\"):
        return False
    if not _literal_ok(value, name, cls):
        return False
    # `--password word` in prose ("pass --password followed by ...") reads as a sentence:
    # outside scripts a spaced word counts only when it does not look like one.
    return not (spaced and not shellish and _WORDLIKE.fullmatch(value))


def _command_line_credentials(text: str, shellish: bool,
                              out: list[tuple[int, int, str]]) -> None:
    if "--" in text:
        for m in _FLAG.finditer(text):
            flag = m.group("flag")
            if not _FLAG_END.search(flag.lower()):
                continue
            cls = _key_class(flag)
            if cls is None or set(flag.lower().replace("_", "-").split("-")) & _SWITCH_BEFORE:
                continue
            spaced = not m.group("eq")
            if spaced:
                ls = text.rfind("\n", 0, m.start()) + 1
                if _PROMPTING.search(text, ls, m.start()):
                    continue
            span = _word_value(text, m.end())
            if span and _ok(text[span[0]:span[1]], flag, cls, spaced, shellish):
                out.append((*span, "command_line_password"))
    if "-p" in text:
        _short_p(text, out)


def _pair_args(text: str, ws: int, we: int, shellish: bool,
               out: list[tuple[int, int, str]]) -> None:
    """`-e DB_PASSWORD=v` and the like in `text[ws:we]`: run on the trigger windows only (the
    secret-sounding name before `=` is what the triggers look for), not on the whole text."""
    window = text[ws:we]
    for lit, rx in _PAIR_ARGS:
        if lit in window:
            _pair_arg(text, rx, ws, we, shellish, out)


def _pair_arg(text: str, rx: re.Pattern[str], ws: int, we: int, shellish: bool,
              out: list[tuple[int, int, str]]) -> None:
    for m in rx.finditer(text, ws, we):
        if m.start() and text[m.start() - 1] not in _BEFORE_OPTION:
            continue
        cls = _key_class(m.group("key"))
        if cls is None:
            continue
        vs = m.end()
        if m.group("q"):  # `-e "DB_PASSWORD=v"`: the word's quotes close the value
            end = text.find(m.group("q"), vs)
            nl = text.find("\n", vs)
            if end < 0 or (0 <= nl < end):
                continue
            span = (vs, end)
        else:
            span = _word_value(text, vs)
        if span and _ok(text[span[0]:span[1]], m.group("key"), cls, False, shellish):
            out.append((*span, "command_line_password"))
