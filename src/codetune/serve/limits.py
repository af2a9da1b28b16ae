"""What the server accepts: its limits, request validation (one rule for /v1/completions and
/generate), and the error shapes of both APIs. The settings themselves are config.py's `serve`
section (`ServeSettings` here).

Every validation error is raised as an `ApiError` before any work starts, so a stream never
begins with a request it will refuse."""

from __future__ import annotations

import errno
import json
import math
import os
import socket
from typing import Any

from codetune.config import API_KEY_ENV, ServeConfig, is_loopback  # noqa: F401 - re-exported
from codetune.errors import CodetuneError
from codetune.infer.generate import GREEDY_BELOW, GenParams

# One definition of the settings, in config.py (the `serve` section of RunConfig): the names
# the server code has always used stay importable from here.
ServeSettings = ServeConfig


def check_bindable(settings: ServeConfig) -> None:
    """Bind HOST:PORT once and let go, before the (slow) model load: a busy port or an address
    this machine does not have is one line now, not a traceback after loading. A public
    address without an API key is refused first (`ServeConfig.check_exposure`)."""
    settings.check_exposure()
    host, port = settings.host, settings.port
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise CodetuneError(f"--host {host} does not resolve ({e}); give an address "
                            "of this machine, e.g. 127.0.0.1") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise CodetuneError(
                    f"port {port} on {host} is already in use (another server?); "
                    "stop it, or pass another --port") from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise CodetuneError(
                    f"not allowed to listen on port {port} ({os.strerror(e.errno)}); "
                    "ports under 1024 need privileges: pass --port 8000 or another "
                    "above 1023") from None
            raise CodetuneError(f"cannot listen on {host}:{port} "
                                f"({e.strerror or e}); check --host and --port") from None


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


def error_body(path: str, status: int, message: str, kind: str) -> dict[str, Any]:
    if path.startswith("/generate"):  # TGI's shape, which llm-ls parses
        return {"error": message, "error_type": kind}
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


SEEDS = (-(1 << 63), 1 << 64)  # OpenAI's seed is an int64, TGI's a u64: accept both


# NFC and NFKC compose at most 4 code points into one character (no character's canonical
# decomposition is longer: U+1F87 and kin; UAX #15's "maximum expansion factor" of NFD is 4).
_COMPOSED = 4


_SPLITTERS = {"ByteLevel", "Metaspace", "Digits", "Punctuation", "Split"}


def max_chars_per_token(tokenizer: Any) -> int | None:
    """The most prompt characters one token can stand for with this tokenizer, or None when no
    bound holds. A prompt of C characters then has at least C / bound tokens, so one longer than
    bound * N characters is over N tokens without tokenizing it.

    Why it holds: every character of the (normalized) text is covered by at least one token, and
    a token covers at most as many characters as its string has bytes (byte-level BPE: one
    vocabulary character per byte, and a character is at least one byte) or characters
    (SentencePiece-style BPE: "▁" is one space; a <0xNN> byte-fallback token one byte). A
    normalizer can shrink the text only by NFC-type composition (at most 4 code points into 1,
    the factor applied) or a Replace to a shorter string (its ratio). That needs a pipeline that
    never drops text and never maps an unbounded run of characters to one token: BPE with a token
    for every byte (the byte-level alphabet, or byte fallback: so no <unk>, which fuses runs),
    pre-tokenizers that only split (not Whitespace, not a Split that removes what it matches),
    added tokens that do not swallow the whitespace around them (lstrip / rstrip), normalizers
    from the list above. Anything else (WordPiece, Unigram, Strip, StripAccents, a regex Replace,
    SentencePiece's precompiled charsmap, a slow tokenizer) gets None: only the exact count, after
    tokenizing, applies."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    model, added = spec.get("model") or {}, spec.get("added_tokens") or []
    shrink, pre = _shrink(spec.get("normalizer")), _splitters(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or shrink is None or pre is None:
        return None
    if any(t.get("lstrip") or t.get("rstrip") for t in added):
        return None
    vocab: dict[str, int] = model.get("vocab") or {}
    if "ByteLevel" in pre:
        from tokenizers.pre_tokenizers import ByteLevel  # tokenizers: ~20 ms

        if not all(c in vocab for c in ByteLevel.alphabet()):
            return None  # a byte without a token would be dropped (or become <unk>)
        lengths = [len(t) for t in vocab]
    elif model.get("byte_fallback") and all(f"<0x{b:02X}>" in vocab for b in range(256)):
        lengths = [1 if len(t) == 6 and t.startswith("<0x") and t.endswith(">") else len(t)
                   for t in vocab]
    else:
        return None
    longest = max(lengths + [len(t.get("content", "")) for t in added], default=1)
    return math.ceil(longest * shrink)


def max_tokens_per_byte(tokenizer: Any) -> int | None:
    """At most how many tokens one UTF-8 byte of text becomes with this tokenizer (None: no
    bound known): then a text of B bytes is at most bound * B tokens without tokenizing it.

    Holds for byte-level BPE (StarCoder, Qwen, DeepSeek-Coder): every token covers at least one
    byte of the normalized text, and the normalizer is none (1) or NFC, which can expand a
    character to at most 3 code points of at most its own UTF-8 length each (UAX #15; 3). Any
    other pipeline (SentencePiece's inserted "▁", NFKD's 18-fold expansions) gets None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    pre = _splitters(spec.get("pre_tokenizer"))
    if (spec.get("model") or {}).get("type") != "BPE" or pre is None or "ByteLevel" not in pre:
        return None
    norm = spec.get("normalizer")
    parts = norm.get("normalizers", []) if norm and norm.get("type") == "Sequence" else [norm]
    kinds = {p.get("type") for p in parts if p is not None}
    if not kinds <= {"NFC"}:
        return None
    return 3 if kinds else 1


def _shrink(spec: dict | None) -> float | None:
    """At most how many input characters one normalized character comes from (None: no bound)."""
    if spec is None:
        return 1.0
    kind = spec.get("type")
    if kind == "Sequence":
        factor = 1.0
        for part in spec.get("normalizers", []):
            f = _shrink(part)
            if f is None:
                return None
            factor *= f
        return factor
    if kind in ("NFC", "NFKC"):
        return _COMPOSED
    if kind in ("NFD", "NFKD", "Lowercase", "Prepend"):  # each character becomes >= 1
        return 1.0
    pattern = (spec.get("pattern") or {}).get("String") if kind == "Replace" else None
    if pattern and spec.get("content"):
        return max(1.0, len(pattern) / len(spec["content"]))
    return None


def _splitters(spec: dict | None) -> set[str] | None:
    """The pre-tokenizers' types, or None if one of them can drop text."""
    if spec is None:
        return set()
    if spec.get("type") == "Sequence":
        kinds: set[str] = set()
        for part in spec.get("pretokenizers", []):
            got = _splitters(part)
            if got is None:
                return None
            kinds |= got
        return kinds
    if spec.get("type") not in _SPLITTERS or spec.get("behavior") == "Removed":
        return None
    return {spec["type"]}


def reject_unsupported(given: dict[str, Any] | None, table: dict[str, tuple[Any, ...]],
                        where: str = "") -> None:
    for name, neutral in table.items():
        value = (given or {}).get(name)
        # bool is an int in Python: `true` must not pass for best_of=1, nor 0 for echo=false
        if value is None or any(value == n and isinstance(value, bool) == isinstance(n, bool)
                                for n in neutral):
            continue
        allowed = " or ".join(["null", *(json.dumps(n) for n in neutral)])
        raise ApiError(400, f"{where}{name}: not supported by this server (send {allowed}, or "
                       "leave it out)")


def gen_params(settings: ServeSettings, max_tokens: int | None, temperature: float | None,
                top_p: float | None, top_k: int | None, stop: Any, seed: int | None,
                do_sample: bool | None = None, *, tgi: bool = False) -> Any:
    """The sampling fields of either route, validated (a 400 naming the field, in the route's
    spelling) and turned into GenParams. Omitted fields take codetune's defaults (the reference notebook's:
    temperature 0.2, top-p 0.95, top-k 50), not OpenAI's temperature 1. Temperature 0, or under
    GREEDY_BELOW, is greedy; so is TGI's do_sample=false when no sampling field is given (TGI
    samples whenever one is)."""
    where = "parameters." if tgi else ""

    def bad(name: str, rule: str, value: Any) -> ApiError:
        return ApiError(400, f"{where}{name}: must be {rule} (got {value!r})")

    # no NaN / inf can reach here from JSON (the schemas refuse them); not-finite checks are for
    # library callers
    if max_tokens is not None and max_tokens < 1:
        raise bad("max_new_tokens" if tgi else "max_tokens", "an integer >= 1", max_tokens)
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise bad("temperature", "a number from 0 to 2 (0: greedy)", temperature)
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise bad("top_p", "a number in (0, 1]", top_p)
    if top_k is not None and not -1 <= top_k < 1 << 31:
        raise bad("top_k", "an integer from 0 to 2**31 - 1 (0, or vLLM's -1: off)", top_k)
    if seed is not None and not SEEDS[0] <= seed < SEEDS[1]:
        raise bad("seed", "an integer from -2**63 to 2**64 - 1", seed)
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > 32 or any(len(s) > 500 for s in stops):
        raise ApiError(400, f"{where}stop: at most 32 strings of at most 500 characters")
    d = GenParams()

    greedy = (temperature is not None and temperature < GREEDY_BELOW) or (
        do_sample is False and temperature is None and top_p is None and top_k is None)
    cap = min(max_tokens or settings.default_max_tokens, settings.max_tokens)
    return GenParams(max_new_tokens=cap, temperature=d.temperature if temperature is None
                     else temperature, top_p=top_p or d.top_p,
                     top_k=d.top_k if top_k is None else max(top_k, 0), greedy=greedy,
                     stop=stops, seed=None if seed is None else seed % (1 << 64))
