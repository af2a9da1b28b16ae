"""Triggers and detectors (see the package docstring for what is detected and why).

The trigger regexes that pick candidate lines out of the whole text, the window limits, the
shape detectors (token formats), detect-secrets' regex plugins loaded as they are, the checks a
match must pass, and the needle index that picks which detectors run on a line."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Callable
from importlib import import_module
from typing import NamedTuple

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

# .properties also separates a key from its value with blanks alone: `db.password s3cret`.
_TRIGGERS_BLANK = [
    re.compile(kw + r"""[\w.-]{0,40}[ \t]+[^\s=:]""")
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


def _placeholder_token(value: str) -> bool:
    """`ACxxxxxxxxxxxxxxxx`, `sk_live_0000000000000000`: documentation, not a key."""
    return Counter(value).most_common(1)[0][1] * 2 > len(value)


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
# Its keyword, entropy, private-key, basic-auth and JWT plugins are replaced by this package's
# own detectors (see the package docstring), AWS and Slack by the stricter patterns above, and
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
