"""Find credentials in source text and replace them with a placeholder.

Before a dataset is written every kept file goes through `scan`; `redact` then swaps each
secret value for a placeholder (``<SECRET>`` by default), so ``password = "hunter22"`` becomes
``password = "<SECRET>"``: only the value changes and the code around it stays byte-identical.
A value written as several literals (``key = ("ghp_ab" "cd...")``, see "Split values" below)
loses every piece: ``key = ("<SECRET>" "<SECRET>")``, quotes, ``+`` and ``\\`` kept. The
report gets file, line (of the first piece), kind and `Finding.masked`, never the value.

What is detected (`Finding.kind`):

* by shape, anywhere in the text: ``aws_access_key`` (AKIA/ASIA/ABIA/ACCA/A3T + 16),
  ``github_token`` (ghp_/gho_/ghu_/ghs_/ghr_, github_pat_), ``gitlab_token`` (glpat- and the
  other GitLab prefixes), ``slack_token`` (xox?-, xapp-), ``slack_webhook`` (the path of a
  hooks.slack.com URL), ``google_api_key`` (AIza + 35), ``stripe_key`` (sk_/rk_, live and
  test), ``huggingface_token`` (hf_ + 34), ``openai_key`` and ``anthropic_key`` (sk-... of
  realistic length, with digits and both cases), ``jwt`` (three base64url parts whose first
  two decode to JSON), ``authorization_header`` (``Bearer``/``Basic`` + a random-looking value);
* ``private_key``: the whole PEM/OpenSSH/PGP block from its BEGIN line through its END line.
  detect-secrets reports only the header, but the body is the secret. A block without an END
  is redacted to the end of the file (a truncated key is still a key). A header that is not
  followed by key material (``PEM_HEADER = "-----BEGIN PRIVATE KEY-----"``) is not a block:
  treating it as one would delete the rest of the file;
* ``aws_secret_key``: 40 base64 characters assigned to an ``aws_secret_access_key``-like name;
* ``url_credentials``: the password in ``scheme://user:password@host`` (user and host stay);
* ``basic_auth``: the password in ``curl -u user:password`` / ``--user`` (also several
  backslash-continued lines after ``curl``; other tools' ``-u 1000:1000`` is a uid:gid);
* ``password_assignment``: a string literal assigned to a name that says password, passwd, pwd,
  passphrase, pass, secret, token, credentials or api/auth/access/private/client/... key, with
  ``=``, ``:``, ``:=``, ``=>``, as a keyword argument, a JSON/YAML key or ``cfg["password"]``,
  bare or in parentheses (``token = ("...")``); and unquoted values at the start of a line in
  .env/ini/YAML form (``DB_PASSWORD=s3cr3t!``, ``  password: Tr0ub4dor3xq``);
* ``high_entropy_string``: a quoted base64- or hex-charset string of >= 20 characters assigned
  to any name, with Shannon entropy above detect-secrets' defaults: 4.5 bits/char for base64,
  3.0 for hex (less a penalty for all-digit strings). Those are the defaults detect-secrets
  ships after tuning on real code; 4.5 is high enough that a base64 value needs >= 23
  characters to reach it at all, so identifiers and words never do. On real code the hex
  limit flags every digest, so hex of a digest's or an id's length (24, 32, 40, 56, 64, 96,
  128) or longer than 128 (a lookup table, not a key), values under digest-like names
  (``sha256``, ``checksum``, ``expected``, ``*_id``)
  are skipped, as are alphabets and keyboard rows, ``org/model-name`` paths, and base64 that
  decodes to printable text;
* the rest of detect-secrets' regex plugins, run as they are: ``twilio_key``,
  ``sendgrid_key``, ``npm_token``, ``pypi_token``, ``azure_storage_key``, ``mailchimp_key``,
  ``discord_token``, ``square_oauth_secret``, ``telegram_token``, ``artifactory_token``,
  ``ibm_cloud_iam_key``, ``ibm_cos_hmac_key``, ``cloudant_key``, ``softlayer_key`` (and its
  GitHub/GitLab/Stripe/OpenAI patterns, which report under the kinds above).

Why it is built this way:

* Speed. `prepare` must process >= 5 MB/s per core, and detect-secrets' ``scan_line`` runs at
  ~0.1 MB/s. Code has almost no secrets, so `scan` first runs a few trigger regexes over the
  text and its lowercase copy, each beginning with a literal: CPython's regex engine skips to
  a literal prefix at memchr-like speed (~2 GB/s), while one alternation of all triggers runs
  at ~10 MB/s. Only the lines they hit (a few per thousand) are examined, and on each line a
  detector runs only when a substring it needs occurs. The Python standard library scans at
  ~85 MB/s on one core. The worst case is a file where every line is a candidate
  (``token = ...`` on each line): ~3-6 MB/s. A trigger that misses a line loses that secret,
  so triggers are broader than the detectors behind them; formats without a fixed prefix
  (Discord, Telegram, IBM, ...) are reached through the quoted-string and keyword triggers.
* Offsets. detect-secrets reports values, not positions, and redaction needs exact spans, so
  its plugins' ``denylist`` regexes are run directly and the span is read off the match. Its
  keyword and entropy plugins are replaced because their rules depend on the file name (`scan`
  gets only text) and are tuned for reviewing commits, not for keeping a corpus clean.
* False positives corrupt training data (a redacted ``key = "name"`` teaches the model
  nonsense), so an assignment counts only when the value is plausibly a credential. Skipped
  values: empty or shorter than 4 characters (8 for tokens and keys); anything containing
  whitespace (messages, prompts; the rare passphrase is a miss we accept); templates and
  format strings (``{x}``, ``${X}``, ``$X``, ``%s``, ``%(x)s``, ``<...>``, ``[PAD]``, ``...``);
  calls and regular expressions; ALL_CAPS_NAMES (the name of an environment variable, not its
  value); URLs and file paths; values that spell their own name (``password = "password1"``,
  ``password_field = "password"``); common dummies (``changeme``, ``xxxx``, ``***``,
  ``your_api_key``, ``example``, ``None``, ...); and, for tokens and keys, plain words
  (``token_type = "bearer"``). Names about a secret rather than holding one are skipped too
  (``password_prompt``, ``token_url``, ``secret_name``, ``max_tokens``, ``is_password``, and a
  tokenizer's ``eos_token``). Unquoted values in code are variables or calls, so they count only
  at the start of a line in .env/ini/YAML form, and a name-shaped value only in .env form
  (``UPPER_NAME=value``) or with two digit runs inside one of its words (``Tr0ub4dor3xq``,
  ``s3cr3t``; not ``base64Password`` or ``md5hash``): ``password = hunter2`` in Python reads
  a variable, ``password: SecretStr`` is an annotation. A URL or curl password equal to its
  user name is a stock demo login (``postgres:postgres``) and is kept.
* Split values (the joined view). ``"AKIA..." "..."``, ``"ghp_..." \\`` + newline + ``"..."``,
  ``"sk_live_..." + "..."``, a backslash-newline inside a literal, or a literal alone on the
  line under ``key = (`` is one value to the program, but no line holds it, so the line scan
  cannot see it. For each trigger window `_regions` follows the statement over the lines that
  continue a literal (a line ending in ``\\``, ``+``, or in ``(`` or a literal with the next
  line starting with a literal or ``+``), `_chains` lexes the literals there into runs
  separated only by blanks, one ``+``, continuations and quote-free comments, and the
  detectors run on a one-line copy of the statement, ``key = ("<pieces joined>")``, whose
  characters map back to the pieces. A secret found there is one finding whose `pieces` are
  the physical spans it covers in each literal. The plausibility rules are those of one
  literal, so ``"Hello, " + name + "!"`` (a name breaks the run), English text and SQL
  (blanks) are not secrets. A run is joined only where that can show something new: a joint
  with no blank or escape on either side (``"ghp_ab" "cd"``, not ``"Your token has "
  "expired"``), ``Bearer `` before a joint, or one blank-free literal under its name; a
  literal that starts a line and is followed by ``:`` is the next key of a mapping, not more
  value. Cost: on the standard library 7% of trigger windows reach a continuation, 3% lead
  to a region worth lexing, and the joined view makes the scan ~9% slower (with this
  change as a whole ~13%: ~34 -> ~30 MB/s on one core of a loaded 2-core VM). The worst case, a continued literal under a
  secret-sounding name on every line, runs at ~1/2 to ~1/5 of the line scan's speed on the
  same file. A secret split so that no piece and no name hits a trigger (``x = "gh" "p_"
  "Zq8Xw3Lm9R" ...``: pieces under 20 characters, no prefix whole, a neutral name) is missed.
* Overlaps (one secret seen by several detectors, e.g. a GitHub token in ``GITHUB_TOKEN =
  "..."``) become one finding covering their union, named by the widest detection; on equal
  width a specific kind beats a generic one (``github_token`` over ``password_assignment``).
  A split secret absorbs the line-level detection of any of its pieces, and a line-level
  detection that is a whole literal followed by more pieces (``password = "Tr0ub4" "dor&3
  horse"``: the joined value has a blank) is extended over them, so no piece is left behind.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import NamedTuple

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
# Triggers, run over the whole text. Each begins with a literal because CPython's regex engine
# then skips to candidate positions at memchr-like speed (~2 GB/s), while an alternation with
# many first characters is tried at every position (all of these in one: ~10 MB/s). Only the
# lines they hit are examined further, so a trigger must be as broad as the detectors behind it.

_TRIGGERS_CASED = [
    re.compile(p)
    for p in (
        # AWS key ids, Google (AIza), Artifactory (AKC), Twilio account SIDs, Azure storage
        r"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9]|Iza|KC[A-Za-z0-9]{10}|C[a-z0-9]{32}|ccountKey=)",
        r"g(?:h[pousr]_|ithub_pat_|l(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-)",
        r"x(?:ox[abposre][-.]|app-)",  # Slack
        r"hf_[A-Za-z0-9]{34}",  # Hugging Face
        r"k(?:_live_|_test_|-[\w-]{20})",  # Stripe sk_/rk_, OpenAI and Anthropic sk-
        r"S(?:G\.|K[a-z0-9]{32})",  # SendGrid, Twilio API key SIDs
        r"yJ[\w-]{8}",  # JWT ("eyJ": "y" is rarer than "e", which makes the scan faster)
        r"-(?:----BEGIN|--- BEGIN|us\d|AgE)",  # private keys, Mailchimp, PyPI
        r"B(?:earer|asic)\s+[A-Za-z0-9+/_.~-]{16}",
        r"://(?:[^\s/@]*:[^\s/@]*@|hooks\.slack\.com/)",  # user:password@, Slack webhooks
        # quoted base64/hex-looking runs: high-entropy strings and token formats without a
        # prefix worth a pass of its own (Discord, Telegram, GitLab runner, Square, IBM, ...)
        r'"[A-Za-z0-9+/=_-]{20}',
        r"'[A-Za-z0-9+/=_-]{20}",
    )
]

# On the lowercased text: a secret-sounding name followed by an assignment operator. ("ken"
# stands for "token": "k" is rarer than "t", so the scan is faster; the extra hits are cheap.)
_TRIGGERS_LOWER = [
    re.compile(kw + r"""[\w-]{0,40}["'`\]]{0,2}[ \t]*(?::|=(?!=)|=>)""")
    for kw in ("p(?:ass|wd)", "secret", "ken", "key", "credential")
]

_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}

# Lines longer than this (minified code, data blobs) are examined in windows around each hit.
_MAX_LINE = 4096
_WINDOW_BEFORE = 512
_WINDOW_AFTER = 2048


# --------------------------------------------------------------------------------------------
# Detectors run on the lines the triggers found.

class _Detector(NamedTuple):
    kind: str
    rx: re.Pattern[str]
    group: int | None  # the value's group; None: first non-empty group, delimiters stripped
    check: Callable[[str], bool] | None
    needles: tuple[str, ...]  # run only if the line contains one of these...
    lower: bool  # ...in its lowercased form
    minlen: int  # ...and is at least this long


def _random_looking(v: str) -> bool:
    """A digit and a letter, or both letter cases: what machine-made tokens have, words lack."""
    digit = any(c.isdigit() for c in v)
    lower = any(c.islower() for c in v)
    upper = any(c.isupper() for c in v)
    return (digit and (lower or upper)) or (lower and upper)


def _strongly_random(v: str) -> bool:
    return (any(c.isdigit() for c in v) and any(c.islower() for c in v)
            and any(c.isupper() for c in v))


def _jwt_valid(v: str) -> bool:
    for part in v.split(".")[:2]:
        part = part.rstrip("=")
        try:
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return False
    return True


def _d(kind: str, pattern: str, group: int | None = 0, check: Callable[[str], bool] | None = None,
       needles: tuple[str, ...] = (), lower: bool = False, minlen: int = 0) -> _Detector:
    return _Detector(kind, re.compile(pattern), group, check, needles, lower, minlen)


# `(` too: `aws_secret_access_key = ("...")`, and the joined view of a parenthesised literal
_ASSIGN_OP = r"""["'`\]]{0,2}\s*(?::=|=>|=|:)\s*(?:\(\s*)?["'`]?"""

_SHAPES = [
    _d("aws_access_key",
       r"(?<![A-Za-z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
       needles=("AKIA", "ASIA", "ABIA", "ACCA", "A3T"), minlen=20),
    _d("aws_secret_key",
       r"(?i)aws[\w.-]{0,20}?(?:secret|key|pwd|pw|password|pass|token)[\w.-]{0,20}?"
       + _ASSIGN_OP + r"([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])",
       1, needles=("aws",), lower=True, minlen=44),
    _d("aws_secret_key",
       r"(?i)secret_?(?:access_?)?key" + _ASSIGN_OP + r"([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])",
       1, needles=("secret",), lower=True, minlen=44),
    _d("github_token",
       r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9_]{36,251}|github_pat_[A-Za-z0-9_]{22,255})"
       r"(?![A-Za-z0-9_])",
       needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), minlen=33),
    _d("gitlab_token",
       r"(?<![\w-])(?:gl(?:pat|dt|ft|soat|rt)-[\w-]{20,50}|GR1348941[\w-]{20,50}"
       r"|glcbt-(?:[0-9a-fA-F]{2}_)?[\w-]{20,50}|glimt-[\w-]{25}|glptt-[\w-]{40}"
       r"|glagent-[\w-]{50,1024}|gloas-[\w-]{64})(?![\w-])",
       needles=("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "GR1348941", "glcbt-",
                "glimt-", "glptt-", "glagent-", "gloas-"), minlen=25),
    _d("slack_token",
       r"(?<![\w-])(?:xox[abposre](?:\.xox[a-z])?-[A-Za-z0-9-]{10,250}"
       r"|xapp-\d-[A-Za-z0-9-]{10,250})(?![\w-])",
       check=_random_looking, needles=("xox", "xapp-"), minlen=15),
    _d("slack_webhook",
       r"hooks\.slack\.com/(?:services|workflows|triggers)/"
       r"(T[A-Za-z0-9_]+/[A-Za-z0-9_]+/[A-Za-z0-9_]+)",
       1, needles=("hooks.slack.com",)),
    _d("google_api_key", r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])",
       needles=("AIza",), minlen=39),
    _d("stripe_key",
       r"(?<![A-Za-z0-9])[sr]k_(?:live|test)_[0-9a-zA-Z]{24,247}(?![0-9a-zA-Z])",
       needles=("k_live_", "k_test_"), minlen=32),
    _d("huggingface_token", r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{34}(?![A-Za-z0-9])",
       check=_random_looking, needles=("hf_",), minlen=37),
    _d("anthropic_key",
       r"(?<![\w-])sk-ant-(?:api|admin|oat|sid)\d\d-[A-Za-z0-9_-]{32,300}(?![\w-])",
       needles=("sk-ant-",), minlen=45),
    _d("openai_key",
       r"(?<![\w-])sk-(?:(?:proj|svcacct|admin|None)-)?[A-Za-z0-9_-]{32,300}(?![\w-])",
       check=_strongly_random, needles=("sk-",), minlen=35),
    _d("jwt",
       r"(?<![\w-])eyJ[A-Za-z0-9_-]{10,}={0,2}\.[A-Za-z0-9_-]{10,}={0,2}\.[A-Za-z0-9_-]*={0,2}",
       check=_jwt_valid, needles=("eyJ",), minlen=25),
    _d("authorization_header",
       r"\b(?:Bearer|Basic)[ \t]+([A-Za-z0-9+/_.~-]{16,}={0,2})(?![\w+/.~=-])",
       1, _random_looking, needles=("Bearer", "Basic"), minlen=22),
]

# detect-secrets' regex plugins, for breadth: (module, class, kind, needles, lower, minlen).
# Its keyword, entropy, private-key, basic-auth and JWT plugins are replaced by this module's
# own detectors (see the module docstring), AWS and Slack by the stricter patterns above, and
# public IP addresses are not credentials.
_DS_PLUGINS = (
    ("artifactory", "ArtifactoryDetector", "artifactory_token", ("AKC", "AP"), False, 11),
    ("azure_storage_key", "AzureStorageKeyDetector", "azure_storage_key", ("AccountKey=",),
     False, 99),
    ("cloudant", "CloudantDetector", "cloudant_key",
     ("cloudant", "clou", "cl_", "cl-", "clkey", "clapi", "clpw", "clpass", "cltoken"), True, 27),
    ("discord", "DiscordBotTokenDetector", "discord_token", (".",), False, 59),
    ("github_token", "GitHubTokenDetector", "github_token",
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), False, 40),
    ("gitlab_token", "GitLabTokenDetector", "gitlab_token",
     ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "GR1348941", "glcbt-", "glimt-", "glptt-",
      "glagent-", "gloas-"), False, 25),
    ("ibm_cloud_iam", "IbmCloudIamDetector", "ibm_cloud_iam_key", ("key", "pwd", "pass", "token"),
     True, 47),
    ("ibm_cos_hmac", "IbmCosHmacDetector", "ibm_cos_hmac_key", ("secret",), True, 55),
    ("mailchimp", "MailchimpDetector", "mailchimp_key", ("-us",), False, 36),
    ("npm", "NpmDetector", "npm_token", ("_authToken",), False, 20),
    ("openai", "OpenAIDetector", "openai_key", ("T3BlbkFJ",), False, 51),
    ("pypi_token", "PypiTokenDetector", "pypi_token", ("pypi-Ag",), False, 80),
    ("sendgrid", "SendGridDetector", "sendgrid_key", ("SG.",), False, 69),
    ("softlayer", "SoftlayerDetector", "softlayer_key",
     ("softlayer", "sl_", "sl-", "slapi", "slkey", "slpass", "slpwd", "sltoken"), True, 66),
    ("square_oauth", "SquareOAuthDetector", "square_oauth_secret", ("sq0csp-",), False, 50),
    ("stripe", "StripeDetector", "stripe_key", ("k_live_",), False, 32),
    ("telegram_token", "TelegramBotTokenDetector", "telegram_token", (":",), False, 44),
    ("twilio", "TwilioKeyDetector", "twilio_key", ("AC", "SK"), False, 34),
)
# Artifactory and npm patterns include the delimiters around the value.
_DS_STRIP = " \t\r\n=:\"'`,;"


def _load_ds() -> list[_Detector]:
    out = []
    for module, cls_name, kind, needles, lower, minlen in _DS_PLUGINS:
        try:  # a plugin renamed or dropped by a later detect-secrets costs breadth, not a crash
            cls = getattr(import_module(f"detect_secrets.plugins.{module}"), cls_name)
        except (ImportError, AttributeError):
            continue
        out += [_Detector(kind, rx, None, None, needles, lower, minlen) for rx in cls.denylist]
    return out


_DETECTORS = _SHAPES + _load_ds()


def _needle_index(lower: bool) -> tuple[re.Pattern[str], dict[str, list[int]]]:
    """One regex finding every needle in a line, and which detectors each needle enables."""
    by_needle: dict[str, list[int]] = {}
    for i, d in enumerate(_DETECTORS):
        if d.lower == lower:
            for n in d.needles:
                by_needle.setdefault(n, []).append(i)
    alts = sorted(by_needle, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, alts))), by_needle


_NEEDLES_CASED, _BY_NEEDLE_CASED = _needle_index(lower=False)
_NEEDLES_LOWER, _BY_NEEDLE_LOWER = _needle_index(lower=True)

# --------------------------------------------------------------------------------------------
# Private keys: a header, then something that looks like key material, so that a constant
# holding just the header line is not taken for a key and everything after it deleted.

_PK_BEGIN = re.compile(r"-{4,5} ?BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
_PK_BODY = re.compile(r"""(?:\s|\\[nr]|["'`+,(]){0,40}"""
                      r"(?:[A-Za-z0-9+/=]{16}|Proc-Type:|Comment:|Version:)")
_PK_END = re.compile(r"-{4,5} ?END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}")

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
    r"secret(?:_?key)?|tokens?(?=_|$)|credentials?(?=_|$)"
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
    "begin", "offset",
})
# Words before the keyword that make it a flag, a counter or a tokenizer's special token.
_META_BEFORE = frozenset({
    "is", "has", "use", "uses", "using", "show", "hide", "enable", "enabled", "disable",
    "disabled", "require", "requires", "required", "num", "n", "max", "min", "count", "forgot",
    "reset", "validate", "verify", "check", "no", "allow", "allowed", "public", "pad", "eos",
    "bos", "unk", "sep", "cls", "mask", "start", "end", "stop", "special", "image", "audio",
    "video", "vision", "begin", "eot", "eom", "tool", "think",
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


def _norm_key(key: str) -> str:
    """The last component of a name, snake_case: `self.dbPassword` -> `db_password`."""
    last = _KEY_SPLIT.split(key.strip("'\"`[]"))[-1]
    return _CAMEL.sub("_", last).lower().replace("-", "_")


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


def _placeholder_token(value: str) -> bool:
    """`ACxxxxxxxxxxxxxxxx`, `sk_live_0000000000000000`: documentation, not a key."""
    return Counter(value).most_common(1)[0][1] * 2 > len(value)


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


def _mask(value: str, kind: str) -> str:
    if kind == "private_key":
        m = _PK_BEGIN.match(value)
        if m:  # the header says what it is and is not secret
            return f"{m.group(0)}…({len(value)} chars)"
    return f"{value[: min(4, len(value) // 4)]}…({len(value)} chars)"


# --------------------------------------------------------------------------------------------

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


def _windows(text: str) -> list[tuple[int, int, bool]]:
    """The line (or, in very long lines, the stretch) around every trigger hit, merged:
    (start, end, whether start is the start of a line)."""
    hits: list[int] = []
    for rx in _TRIGGERS_CASED:
        hits += [m.start() for m in rx.finditer(text)]
    low = text.lower()
    if len(low) != len(text):  # some non-ASCII characters lowercase to two; keep offsets
        low = text.translate(_ASCII_LOWER)
    for rx in _TRIGGERS_LOWER:
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


_GENERIC_RANK = {"authorization_header": 1, "url_credentials": 1, "password_assignment": 2,
                 "high_entropy_string": 3}

_Spans = tuple[tuple[int, int], ...]


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


def scan(text: str) -> list[Finding]:
    """Every secret in `text`, sorted by start; no two findings share a character."""
    raw: list[tuple[int, int, str]] = []
    windows = _windows(text)
    for ws, we, at_line_start in windows:
        _scan_window(text[ws:we], ws, at_line_start, raw)
    if "PRIVATE KEY" in text:
        _private_keys(text, raw)
    if "curl" in text:
        _curl_credentials(text, raw)
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
