"""Where a base model comes from: a Hub id, a local folder or a local .gguf file, and what
identifies it in a run record (a Hub revision or a sha256 of the weights).

    resolve_source(name, revision)   -> ModelSource(kind, path, revision, gguf_file, identity)
    hf_call(src, what, fn, ...)      a from_pretrained call whose Hub/IO errors name the remedy
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from codetune.errors import CodetuneError

log = logging.getLogger(__name__)

__all__ = ["ModelSource", "hf_call", "resolve_source"]

# ---------------------------------------------------------------------------------------------
# Where the model comes from

WEIGHT_GLOBS = ("*.safetensors", "*.bin")
NOT_WEIGHTS = {"training_args.bin", "optimizer.bin", "scheduler.bin"}
_HASH_CHUNK = 8 << 20  # bytes read at a time: a 14 GB checkpoint is hashed in constant memory


@dataclass(frozen=True)
class ModelSource:
    """Where a base model comes from, and what identifies it in a run record.

    kind      "hub": `path` is a Hub id (`revision` a branch, tag or commit; None = default branch).
              "folder": `path` is a local folder with config.json and weight files.
              "gguf": `path` is the folder holding the file `gguf_file` (transformers loads it
              with `from_pretrained(path, gguf_file=gguf_file)` and dequantizes it).
    identity  "hub:<id>@<revision or main>", or for local weights "sha256:<hex>": for a .gguf the
              file's own sha256 (what `sha256sum` prints); for a folder the sha256 of the lines
              "<relative path>\\0<sha256 of the file>\\n" over its *.safetensors / *.bin files,
              sorted by path. None when resolved with `hash_weights=False`.
    """

    kind: Literal["hub", "folder", "gguf"]
    path: str
    revision: str | None = None
    gguf_file: str | None = None
    identity: str | None = None

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `from_pretrained(self.path, **kwargs)`."""
        kw: dict[str, Any] = {}
        if self.revision is not None:
            kw["revision"] = self.revision
        if self.gguf_file is not None:
            kw["gguf_file"] = self.gguf_file
        return kw

    def record(self) -> dict[str, Any]:
        """A JSON-ready description for the run record."""
        return asdict(self)


def resolve_source(name: str | None, revision: str | None = None, *,
                   hash_weights: bool = True) -> ModelSource:
    """Classify `name` as a local .gguf file, a local model folder or a Hub id.

    A path that exists wins over a Hub id of the same spelling (as in transformers). A name that
    looks like a path (ends in .gguf, starts with / . ~, or has more than one slash) but does
    not exist is an error here rather than a confusing Hub lookup. Nothing is cached: hashing
    streams every weight file once per call (pass `hash_weights=False` when only loading).
    """
    if not name or not str(name).strip():
        raise CodetuneError("no base model given: set model.name (or --model) to a Hub id such as "
                            "bigcode/starcoderbase-1b, a local model folder, or a .gguf file")
    name = str(name).strip()
    path = Path(name).expanduser()
    if path.exists():
        if revision is not None:
            log.warning("model.revision=%s is ignored for the local path %s", revision, path)
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise CodetuneError(
                    f"{path} is a file but not a .gguf file; give the model folder (with "
                    "config.json and the weights) or a .gguf file")
            return _gguf_source(path, hash_weights)
        return _folder_source(path, hash_weights)
    if _looks_like_path(name):
        raise CodetuneError(
            f"model path {name} does not exist; check the path (relative paths are taken from "
            f"{Path.cwd()}), or give a Hub id such as bigcode/starcoderbase-1b")
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # heavy: ~15 ms

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise CodetuneError(
            f"model {name!r} is neither an existing local path nor a valid Hub id; give a Hub "
            "id (org/name, e.g. bigcode/starcoderbase-1b), a local model folder or a .gguf file"
        ) from None
    return ModelSource("hub", name, revision, None, f"hub:{name}@{revision or 'main'}")


def _looks_like_path(name: str) -> bool:
    return (name.lower().endswith(".gguf") or name.startswith(("/", ".", "~"))
            or name.count("/") > 1 or "\\" in name or os.path.isabs(name))


def _gguf_source(path: Path, hash_weights: bool) -> ModelSource:
    _require_gguf(path)
    path = path.resolve()
    ident = "sha256:" + _sha256_file(path).hex() if hash_weights else None
    return ModelSource("gguf", str(path.parent), None, path.name, ident)


def _require_gguf(path: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise CodetuneError(
            f"{path} is a GGUF file, and reading GGUF needs the `gguf` package: "
            "pip install gguf (transformers then dequantizes the file on load)")


def _folder_source(path: Path, hash_weights: bool) -> ModelSource:
    path = path.resolve()
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _gguf_source(ggufs[0], hash_weights)
        if ggufs:
            raise CodetuneError(
                f"{path} holds several .gguf files ({', '.join(g.name for g in ggufs[:4])}); "
                f"name one: model.name={ggufs[0]}")
        if (path / "adapter_config.json").is_file():
            raise CodetuneError(
                f"{path} is a LoRA adapter, not a base model; give its base model as model.name "
                "(its adapter_config.json names it under base_model_name_or_path), or merge it "
                "first with `codetune merge`")
        raise CodetuneError(
            f"{path} is not a model folder: it has no config.json; give the folder written by "
            "save_pretrained (config.json, tokenizer files, *.safetensors) or a .gguf file")
    weights = _weight_files(path)
    if not weights:
        raise CodetuneError(
            f"{path} has a config.json but no weight files (*.safetensors or *.bin); copy the "
            "weights into it, or give a Hub id")
    ident = None
    if hash_weights:
        outer = hashlib.sha256()
        for f in weights:
            rel = f.relative_to(path).as_posix()
            outer.update(rel.encode() + b"\0" + _sha256_file(f).hex().encode() + b"\n")
        ident = "sha256:" + outer.hexdigest()
    return ModelSource("folder", str(path), None, None, ident)


def _weight_files(folder: Path) -> list[Path]:
    found = set()
    for pattern in WEIGHT_GLOBS:
        for f in folder.rglob(pattern):
            rel = f.relative_to(folder)
            if f.is_file() and f.name not in NOT_WEIGHTS and not any(
                    p.startswith(".") for p in rel.parts):
                found.add(f)
    return sorted(found, key=lambda f: f.relative_to(folder).as_posix())


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.digest()


# ---------------------------------------------------------------------------------------------
# Errors from the Hub, turned into remedies


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _explain(src: ModelSource, exc: BaseException, what: str) -> CodetuneError | None:
    """A CodetuneError for a failure users can fix (missing, gated, offline), else None."""
    from huggingface_hub import errors as hf  # heavy: huggingface_hub.errors (~0.1 s)

    name = src.path
    page = f"https://huggingface.co/{name}"
    missing_help = (
        "Check the spelling of the Hub id (e.g. bigcode/starcoderbase-1b) and the network "
        "connection (with HF_HUB_OFFLINE=1 only models already in the Hugging Face cache "
        "load); a private or gated model also needs `hf auth login` and its licence accepted "
        "on its page. Or give a local model folder (config.json + weights) or a .gguf file: "
        "model.name=/path/to/model.")
    for e in _chain(exc):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, hf.GatedRepoError) or (
                status in (401, 403) and not isinstance(e, hf.RepositoryNotFoundError)):
            return CodetuneError(
                f"{name} is a gated or private model (HTTP {status or '401/403'}) and this "
                f"machine may not read it: run `hf auth login` with a token of an account that "
                f"has access, and accept the licence on {page}; then retry.")
        if isinstance(e, hf.RevisionNotFoundError):
            return CodetuneError(
                f"revision {src.revision!r} of {name} does not exist; check model.revision "
                f"(a branch, tag or commit listed on {page}/tree/main), or drop it for the "
                "default branch.")
        if isinstance(e, hf.RepositoryNotFoundError):
            return CodetuneError(f"{what} {name!r} was not found on the Hugging Face Hub. "
                                 + missing_help)
        if isinstance(e, hf.LocalEntryNotFoundError | hf.OfflineModeIsEnabled) or (
                type(e).__name__ in ("ConnectError", "ConnectTimeout", "gaierror")):
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if offline else
                   "the Hub could not be reached and it is not in the local cache")
            return CodetuneError(f"{what} {name!r} could not be loaded: {why}. " + missing_help)
        if isinstance(e, hf.EntryNotFoundError):
            return CodetuneError(
                f"{name} has no {getattr(e, 'filename', None) or 'config.json'}: it is not a "
                "transformers model repository; pick a model repo that has config.json and "
                "safetensors weights, or a local .gguf file.")
    return None


def hf_call(src: ModelSource, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except (OSError, ValueError) as e:
        err = _explain(src, e, what) if src.kind == "hub" else None
        if err is not None:
            raise err from None
        if src.kind != "hub" and isinstance(e, OSError):
            raise CodetuneError(f"could not load the {what} from {src.path}: {e}") from None
        raise
