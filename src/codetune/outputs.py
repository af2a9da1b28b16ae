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
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
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


def mark(kind: str) -> dict[str, str]:
    """The field to put in the marker file of a `kind` folder."""
    return {"format": MARKS[kind][1]}


def kind_of(folder: str | Path) -> str | None:
    """The kind of codetune folder `folder` is, judged by content, or None."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return None
    for kind, (name, fmt) in MARKS.items():
        p = folder / name
        try:
            if not p.is_file() or p.is_symlink() or p.stat().st_size > _MAX_MARKER_BYTES:
                continue
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if data.get("format") == fmt:
            return kind
        if "format" not in data and kind in _LEGACY and _LEGACY[kind] <= data.keys():
            return kind
    return None


def is_partial(name: str) -> bool:
    """A hidden build or aside folder of ours (`.NAME.partial-PID`, `.NAME.replaced-PID`)."""
    return name.startswith(".") and (".partial-" in name or ".replaced-" in name)


def check(out: str | Path, overwrite: bool, kind: str, *, replace_own: bool = False) -> Path:
    """Refuse to clobber (see the module docstring); returns `out` made absolute."""
    out = Path(out).absolute()
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
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a temporary name, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
