"""Output folders: what codetune may replace, and how it replaces them without losing anything.

Every folder codetune writes carries a mark that only codetune writes: a JSON file whose
`format` field names the kind of folder (`MARKS`). A folder is "ours" only if that file parses
and says so; a file that merely has the right name (`manifest.json` of a web app, `run.json` of
someone's experiment) is not enough. Runs and merged models written before the field existed
are recognised by the exact set of keys codetune wrote (`_LEGACY`).

The rules, the same for every command:

* an `-o` folder that does not exist, or is empty, is used;
* an existing folder of the command's own kind is replaced only with `--overwrite` (or,
  for regenerable reports such as `eval`, always: `replace_own=True`);
* anything else is refused, even with `--overwrite`; so is a symbolic link (replacing a link
  would delete the folder it points to, which the user never named);
* the new output is built beside the old one (a hidden sibling, `staged`) and swapped in
  only when complete, or, for a run that must live at its final path while it trains, the old
  one is moved aside and removed only after the new one completed (`replacing`). Nothing is
  deleted before every input has been checked.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError

# kind -> (marker file, value of its "format" field)
MARKS: dict[str, tuple[str, str]] = {
    "dataset": ("manifest.json", "codetune-dataset"),
    "run": ("run.json", "codetune-run"),
    "merged": ("codetune_merge.json", "codetune-merged"),
    "eval": ("eval.json", "codetune-eval"),
    "demo": ("demo.json", "codetune-demo"),
    "index": ("index.json", "codetune-index"),
    "export": ("codetune_export.json", "codetune-export"),
}
WHAT = {"dataset": "a codetune dataset", "run": "a codetune run folder",
        "merged": "a merged codetune model", "eval": "a codetune evaluation report",
        "demo": "a codetune demo folder", "index": "a codetune repository index",
        "export": "a codetune export"}
# Markers written before the `format` field existed: the exact keys codetune put in them.
_LEGACY = {
    "run": {"codetune_version", "base_model", "dataset", "fim_format", "finetune", "lora"},
    "merged": {"run", "base_model", "dtype", "max_abs_logit_diff", "verified_inputs"},
    "eval": {"verdict", "metrics", "task_records", "fim_format"},
    "demo": {"source", "chosen", "out_dir", "steps", "verdict"},
}
_MAX_MARKER_BYTES = 64 << 20  # eval.json holds every task; anything larger is not ours

# The top-level names each kind of folder holds when codetune wrote it (fnmatch patterns).
# `--overwrite` replaces a folder only if every entry in it is one of these or is listed in
# its marker's `files` (written when the folder is committed): a user's NOTES.txt or a
# repository inside a dataset folder is refused by name instead of being deleted with it.
# Runs and demos need the patterns most: they are built in place and grow while they train.
_MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors",
                "*.safetensors.index.json", "pytorch_model*.bin", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                "added_tokens.json", "chat_template.jinja", "tokenizer.model", "README.md")
OWN_NAMES: dict[str, tuple[str, ...]] = {
    "dataset": ("manifest.json", "report.md", "dropped.jsonl", "secrets.jsonl", "data",
                "context", "staging.parquet"),
    "run": ("run.json", "config.yaml", "checkpoints", "logs", "eval", "metrics.json",
            "loss_curve.png", "adapter_config.json", "adapter_model.safetensors",
            "adapter_model.bin", *_MODEL_FILES),
    "merged": ("codetune_merge.json", *_MODEL_FILES),
    "eval": ("eval.json", "report.md", "eval.png"),
    "demo": ("demo.json", "dataset", "run"),
    "index": ("index.json", "*.parquet", "bm25"),
    "export": ("codetune_export.json", "README.md", "*.gguf", "Modelfile", "tabby.json",
               "ggml", "client.py", "model"),
}


def mark(kind: str) -> dict[str, str]:
    """The field to put in the marker file of a `kind` folder."""
    return {"format": MARKS[kind][1]}


def _marker(folder: Path, kind: str) -> dict[str, Any] | None:
    """The parsed marker of `folder` if it says `folder` is a `kind` folder, else None."""
    name, fmt = MARKS[kind]
    p = folder / name
    try:
        if not p.is_file() or p.is_symlink() or p.stat().st_size > _MAX_MARKER_BYTES:
            return None
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("format") == fmt:
        return data
    if "format" not in data and kind in _LEGACY and _LEGACY[kind] <= data.keys():
        return data
    return None


def kind_of(folder: str | Path) -> str | None:
    """The kind of codetune folder `folder` is, judged by content, or None."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return None
    return next((kind for kind in MARKS if _marker(folder, kind) is not None), None)


def foreign(folder: str | Path, kind: str) -> list[str]:
    """The entries of the `kind` folder `folder` that codetune did not write (`OWN_NAMES`,
    plus the names its marker lists under `written`), sorted; folders end in `/`."""
    folder = Path(folder)
    data = _marker(folder, kind) or {}
    listed = data.get("written")
    listed = {x for x in listed if isinstance(x, str)} if isinstance(listed, list) else set()
    found = []
    for entry in folder.iterdir():
        name = entry.name
        base = name.removesuffix(".tmp")  # a `write_json` cut short by a kill
        if base in listed or is_partial(name) or name.startswith(".codetune-probe-") or any(
                fnmatch.fnmatchcase(base, pat) for pat in OWN_NAMES[kind]):
            continue
        found.append(name + ("/" if entry.is_dir() and not entry.is_symlink() else ""))
    return sorted(found)


def _refuse_foreign(out: Path, kind: str) -> None:
    extra = foreign(out, kind)
    if extra:
        shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
        raise CodetuneError(
            f"{out} holds {WHAT[kind]} and also {len(extra)} entr{'y' if len(extra) == 1 else 'ies'}"
            f" codetune did not write ({shown}); replacing the folder would delete them. Move "
            "them out of it, or choose another -o folder. Nothing was touched.")


def check_inputs(out: str | Path, inputs: Iterable[tuple[str, str | Path | None]], *,
                 home: str | Path | None = None) -> None:
    """Refuse an output folder that is, holds or lies inside one of the command's inputs
    (`(what, path)` pairs; paths that are not local folders or files are skipped), before
    anything is touched: `prepare ds/mysrc -o ds --overwrite` would delete the repository it
    reads, and an output inside an input is read back as input or deleted with it. `home` is
    an input the output may lie inside by design (a run's `eval/` report)."""
    o = Path(os.path.realpath(out))
    home_r = Path(os.path.realpath(home)) if home is not None else None
    for what, path in inputs:
        if path is None or not str(path) or not os.path.exists(path):
            continue
        r = Path(os.path.realpath(path))
        if r == o or r.is_relative_to(o):
            raise CodetuneError(
                f"the output folder {out} {'is' if r == o else 'holds'} the {what} {path}; "
                "writing there would replace it. Choose an -o folder outside it.")
        if o.is_relative_to(r) and r != home_r:
            raise CodetuneError(
                f"the output folder {out} lies inside the {what} {path}; codetune never writes "
                "into its inputs (the output would be read back as input, or deleted with "
                f"it). Choose an -o folder outside {path}.")


def is_partial(name: str) -> bool:
    """A hidden build or aside folder of ours (`.NAME.partial-PID`, `.NAME.replaced-PID`)."""
    return name.startswith(".") and (".partial-" in name or ".replaced-" in name)


def inside(root: Path, rel: str) -> Path:
    """`root / rel`, refused unless it lies inside `root`: a name that came from the user
    (`export --name`) never places a file anywhere else, whatever it holds."""
    path = root / rel
    if Path(rel).is_absolute() or not Path(os.path.realpath(path)).is_relative_to(
            os.path.realpath(root)):
        raise CodetuneError(f"{rel!r} would be written outside {root}; give a plain name")
    return path


def check(out: str | Path, overwrite: bool, kind: str, *, replace_own: bool = False,
          inputs: Iterable[tuple[str, str | Path | None]] = (),
          home: str | Path | None = None) -> Path:
    """Refuse to clobber (see the module docstring) or to write into, over or around one of
    `inputs` (`check_inputs`); returns `out` made absolute."""
    out = Path(out).absolute()
    check_inputs(out, inputs, home=home)
    if out.is_symlink():
        raise CodetuneError(
            f"{out} is a symbolic link (to {os.readlink(out)}); codetune never replaces a link "
            "or what it points to. Give the real folder, or another -o folder.")
    if not out.exists():
        if not out.parent.is_dir():
            raise CodetuneError(f"the parent folder of {out} does not exist; create it first "
                                "or choose another -o folder")
        _check_writable(out.parent)
        return out
    if not out.is_dir():
        raise CodetuneError(f"{out} exists and is not a folder; choose another -o folder")
    if not any(out.iterdir()):
        _check_writable(out.parent)
        return out
    found = kind_of(out)
    if found != kind:
        what = f" (it is {WHAT[found]})" if found else ""
        raise CodetuneError(f"{out} is not {WHAT[kind]}{what}; refusing to replace it, even "
                            "with --overwrite. Choose another -o folder.")
    if not overwrite and not replace_own:
        raise CodetuneError(f"{out} already holds {WHAT[kind]}; pass --overwrite to replace "
                            "it (the old one is removed only once the new one is complete), "
                            "or choose another -o folder")
    _refuse_foreign(out, kind)
    _check_writable(out.parent)
    return out


def _check_writable(parent: Path) -> None:
    """Fail before any work if nothing can be created in `parent` (a read-only folder or
    file system, a full disk): a probe folder is made and removed."""
    try:
        probe = parent / f".codetune-probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise write_error(e, parent) from None


def write_error(e: OSError, where: str | Path) -> CodetuneError:
    """The one-line error for an OSError met while writing under `where`."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CodetuneError(f"the disk holding {where} is full; free some space or choose an "
                             "-o folder on another disk. Nothing earlier was touched.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CodetuneError(f"cannot write in {where} ({os.strerror(e.errno)}); choose an -o "
                             "folder you can write to")
    name = e.filename or where
    return CodetuneError(f"cannot write {name} ({e.strerror or e}); check the -o folder")


def _sibling(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}"


@contextlib.contextmanager
def staged(out: str | Path, overwrite: bool, kind: str, *,
           replace_own: bool = False, checked: bool = False) -> Iterator[Path]:
    """Build an output in a hidden sibling folder; yields it. On success the old `out` (if
    any) is renamed aside, the new one renamed into place, and the old one removed last. On
    any failure the sibling is removed and `out` is left exactly as it was."""
    out = Path(out).absolute() if checked else check(out, overwrite, kind,
                                                     replace_own=replace_own)
    tmp = _sibling(out, "partial")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as e:
        raise write_error(e, out.parent) from None
    try:
        yield tmp
        record_written(tmp, kind)
        commit(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(e, out.parent) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit(tmp: Path, out: Path) -> None:
    """Move a finished folder into place; an old one is removed only after that."""
    old = None
    if out.exists():
        old = _sibling(out, "replaced")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class Replacing:
    """An output that must live at its final path while it is built (a training run, whose
    checkpoints `--resume` finds there). Create with `replacing()`."""

    def __init__(self, out: Path, aside: Path | None) -> None:
        self.out, self.aside = out, aside


@contextlib.contextmanager
def replacing(out: str | Path, overwrite: bool, kind: str, *,
              keep_failed: Callable[[Path], bool] = lambda p: False,
              echo: Callable[[str], Any] | None = None) -> Iterator[Replacing]:
    """Make `out` a fresh empty folder, keeping an old one aside until the new one is done.

    Call only after every input has been checked. On success the old folder is removed. On
    failure the new folder is removed and the old one put back, unless `keep_failed(out)` says
    the new one is worth keeping (a run with a checkpoint can be resumed); then the old one
    stays aside and its path is printed."""
    say = echo or (lambda s: print(s, file=sys.stderr))
    out = check(out, overwrite, kind)
    aside = None
    try:
        if out.exists():
            aside = _sibling(out, "replaced")
            os.rename(out, aside)
            say(f"note: the previous {kind} is kept at {aside} until this one completes")
        out.mkdir()
    except OSError as e:
        if aside is not None and not out.exists():
            os.rename(aside, out)
        raise write_error(e, out.parent) from None
    state = Replacing(out, aside)
    try:
        yield state
    except BaseException:
        if keep_failed(out):
            if aside is not None:
                say(f"note: the previous {kind} is still at {aside}; delete it once this one "
                    "is finished")
        else:
            shutil.rmtree(out, ignore_errors=True)
            if aside is not None:
                os.rename(aside, out)
        raise
    record_written(out, kind)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def record_written(folder: Path, kind: str) -> None:
    """List the top-level entries of a finished `kind` folder in its marker (`written`): what
    a later `--overwrite` may replace (see `foreign`). A folder without its marker is left
    as it is."""
    data = _marker(folder, kind)
    if data is None:
        return
    data["written"] = sorted(p.name for p in folder.iterdir() if not is_partial(p.name))
    write_json(folder / MARKS[kind][0], data)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a temporary name, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
