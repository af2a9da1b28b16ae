"""Where files come from: local folders, git repositories (URLs or paths), and datasets.

A source turns into a stream of `Candidate`s: a path inside a repository plus either a file to
read or the text itself. Sources never read file contents (workers do, see `filters.py`); they
decide which paths exist and reject the unsafe ones up front:

- a symlink is never followed: one that points outside the source root is `symlink_outside_root`,
  a dangling or looping one `broken_symlink`, one that stays inside `symlink` (its target is a
  file of the repository in its own right, so reading the link too would only duplicate it);
- devices, FIFOs and sockets are `not_regular_file` (opening a FIFO would block forever);
- in a git work tree the files are what git tracks (`git ls-files`), so `.gitignore` holds; in a
  plain folder `.gitignore` files are applied by pattern with `pathspec`;
- codetune's own output folders (a dataset, run, merged model or report written inside the
  source, and their hidden build folders) are `codetune_output`: a second `prepare SRC -o
  SRC/ds2` must not train on the first one's manifest and report.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from codetune import outputs
from codetune.errors import CodetuneError

DATASET_EXTS = (".parquet", ".json", ".jsonl", ".csv", ".arrow")
_GIT_URL = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")


@dataclass
class Candidate:
    """One file of one repository, before filtering."""

    repo_id: str
    path: str  # relative to the repository root; may hold surrogate escapes from odd bytes
    fs_path: str | None = None  # absolute path to read, for files on disk
    content: str | None = None  # the text, for dataset rows
    root: str | None = None  # real path of the source root (reads must stay inside it)
    reason: str | None = None  # set when the source itself rejects the entry
    detail: str = ""
    has_path: bool = True  # False for dataset rows without a path column (no path filters)


@dataclass
class SourceInfo:
    """What the manifest records about a source."""

    spec: str
    kind: str  # "folder" | "git" | "dataset"
    repo_id: str
    location: str
    commit: str | None = None
    ref: str | None = None
    dirty: bool | None = None
    files_listed: int = 0
    extra: dict = field(default_factory=dict)


def printable_path(path: str) -> str:
    """A path as valid UTF-8 text: undecodable bytes as \\xNN, control chars escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


# --------------------------------------------------------------------------- git helpers


def _git(args: list[str], cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C")
    try:
        return subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", "-c", "protocol.file.allow=always", *args],
            cwd=cwd, env=env, capture_output=True, check=check,
        )
    except FileNotFoundError:
        raise CodetuneError("git is not installed; install git, or pass plain folders") from None


def git_toplevel(path: str) -> str | None:
    if shutil.which("git") is None:
        return None
    r = _git(["rev-parse", "--show-toplevel"], cwd=path, check=False)
    return os.fsdecode(r.stdout.strip()) if r.returncode == 0 else None


def git_head(path: str) -> tuple[str | None, bool | None]:
    r = _git(["rev-parse", "HEAD"], cwd=path, check=False)
    if r.returncode != 0:
        return None, None  # a repository without commits yet
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd=path, check=False)
    return r.stdout.decode().strip(), bool(dirty.stdout.strip())


def git_remote_name(path: str) -> str | None:
    r = _git(["config", "--get", "remote.origin.url"], cwd=path, check=False)
    return repo_name_from_url(r.stdout.decode().strip()) if r.returncode == 0 and r.stdout else None


def repo_name_from_url(url: str) -> str:
    """`https://host/org/repo.git` -> `org/repo`; a local path -> its last two parts."""
    url = url.rstrip("/").removesuffix(".git")
    parts = [p for p in re.split(r"[/:]", url) if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else (parts[-1] if parts else "repo")


def git_error_line(stderr: bytes) -> str:
    """Git's first error line (`fatal: ...` / `error: ...`, prefix dropped): the cause, where
    the last line is only advice ("and the repository exists.")."""
    lines = [x.strip() for x in stderr.decode(errors="replace").splitlines() if x.strip()]
    first = next((x for x in lines if x.startswith(("fatal:", "error:"))), None)
    if first is None:
        return lines[0] if lines else "no message from git"
    return first.split(":", 1)[1].strip()


def clone(url: str, ref: str | None, cache_dir: Path, submodules: bool) -> tuple[str, str]:
    """Shallow-fetch `url` at `ref` (branch, tag or commit; default HEAD) into the cache and
    return (work tree, commit SHA). No hooks run; submodules only when asked."""
    if os.path.isdir(url) and not _GIT_URL.match(url):
        url = Path(url).resolve().as_uri()  # --depth is ignored for plain local paths
    key = hashlib.sha256(f"{url}#{ref or ''}".encode()).hexdigest()[:16]
    dest = cache_dir / f"{repo_name_from_url(url).replace('/', '__')}-{key}"
    fresh = not (dest / ".git").is_dir()
    if fresh:
        dest.mkdir(parents=True, exist_ok=True)
        _git(["init", "-q", "--template=", str(dest)])
        _git(["remote", "add", "origin", url], cwd=str(dest))
    r = _git(["fetch", "-q", "--depth", "1", "--no-tags", "origin", ref or "HEAD"],
             cwd=str(dest), check=False)
    if r.returncode != 0:
        msg = git_error_line(r.stderr)
        if fresh:
            shutil.rmtree(dest, ignore_errors=True)
            raise CodetuneError(
                f"could not fetch {url} at {ref or 'HEAD'} ({msg}); check the URL and ref, "
                "your network, and your git credentials (codetune never prompts for a password)")
        # Offline with a cached copy: use it, the manifest records which commit it was.
        print(f"warning: could not update {url} ({msg}); using the cached copy")
    else:
        _git(["checkout", "-q", "--detach", "--force", "FETCH_HEAD"], cwd=str(dest))
        if submodules:
            _git(["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"],
                 cwd=str(dest))
    sha = _git(["rev-parse", "HEAD"], cwd=str(dest)).stdout.decode().strip()
    return str(dest), sha


# --------------------------------------------------------------------------- walking


def _classify_link_or_special(full: str, root: str, st: os.stat_result) -> tuple[str, str] | None:
    """(reason, detail) for an entry that must not be read, else None for a regular file."""
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(full)
        if os.path.commonpath([target, root]) != root:
            return "symlink_outside_root", "points outside the source folder"
        try:
            tst = os.stat(full)
        except OSError as e:  # ELOOP, ENOENT
            return "broken_symlink", os.strerror(e.errno) if e.errno else str(e)
        if not (stat.S_ISREG(tst.st_mode) or stat.S_ISDIR(tst.st_mode)):
            return "not_regular_file", "link to a device, FIFO or socket"
        return "symlink", "its target inside the folder is read on its own"
    if not stat.S_ISREG(st.st_mode):
        return "not_regular_file", "device, FIFO or socket"
    return None


def _entry(repo_id: str, root: str, rel: str) -> Candidate:
    full = os.path.join(root, rel)
    try:
        st = os.lstat(full)
    except OSError as e:
        return Candidate(repo_id, rel, reason="unreadable",
                         detail=os.strerror(e.errno) if e.errno else str(e))
    rejected = _classify_link_or_special(full, root, st)
    if rejected:
        return Candidate(repo_id, rel, reason=rejected[0], detail=rejected[1])
    return Candidate(repo_id, rel, fs_path=full, root=root)


def _own_output(root: str, rel_dir: str, name: str) -> bool:
    """Whether folder `rel_dir` (relative to `root`, last component `name`) is codetune's."""
    return outputs.kind_of(os.path.join(root, rel_dir)) is not None


def _skip_own_outputs(repo_id: str, root: str, cands: Iterator[Candidate]) -> Iterator[Candidate]:
    """Listed files minus those inside codetune's own output folders (each reported once)."""
    verdict: dict[str, str | None] = {"": None}  # folder -> the own-output folder holding it

    def holder(rel_dir: str) -> str | None:
        if rel_dir not in verdict:
            parent, _, name = rel_dir.rpartition("/")
            up = holder(parent)
            verdict[rel_dir] = up if up is not None else (
                rel_dir if _own_output(root, rel_dir, name) else None)
        return verdict[rel_dir]

    reported: set[str] = set()
    for c in cands:
        own = holder(c.path.rpartition("/")[0]) if "/" in c.path else None
        if own is None and any(outputs.is_partial(p) for p in c.path.split("/")[:-1]):
            continue  # a hidden build folder of a codetune command: transient, not content
        if own is None:
            yield c
        elif own not in reported:
            reported.add(own)
            yield Candidate(repo_id, own + "/", reason="codetune_output",
                            detail="a folder codetune wrote; not walked")


def iter_git_files(repo_id: str, root: str, submodules: bool) -> Iterator[Candidate]:
    """Tracked files of the work tree at `root` (NUL-separated, so any byte in a name is fine)."""
    yield from _skip_own_outputs(repo_id, root, _iter_git_files(repo_id, root, submodules))


def _iter_git_files(repo_id: str, root: str, submodules: bool) -> Iterator[Candidate]:
    if submodules:
        out = _git(["ls-files", "-z", "--cached", "--recurse-submodules"], cwd=root).stdout
        for raw in out.split(b"\0"):
            if raw:
                yield _entry(repo_id, root, os.fsdecode(raw))
        return
    # --stage shows the mode: 160000 is a submodule (a commit pointer, not a file).
    out = _git(["ls-files", "-z", "--cached", "--stage"], cwd=root).stdout
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, _, raw = rec.partition(b"\t")
        rel = os.fsdecode(raw)
        if meta.startswith(b"160000"):
            yield Candidate(repo_id, rel, reason="submodule",
                            detail="not followed; pass --submodules to include it")
        else:
            yield _entry(repo_id, root, rel)


def iter_folder_files(repo_id: str, root: str, vendored: set[str]) -> Iterator[Candidate]:
    """Files under `root`, honouring `.gitignore` files by pattern. Vendored folders and
    ignored folders are not descended into; each is reported once, as `dir/`."""
    import pathspec  # pathspec: ~50 ms, for folders outside git only

    stack: list[tuple[str, pathspec.PathSpec]] = []  # (folder relative to root, its rules)

    def ignored(rel: str, is_dir: bool) -> bool:
        for base, spec in stack:
            if base and not rel.startswith(base + "/"):
                continue
            sub = rel[len(base) + 1:] if base else rel
            if spec.match_file(sub + "/" if is_dir else sub):
                return True
        return False

    def walk(rel_dir: str) -> Iterator[Candidate]:
        full_dir = os.path.join(root, rel_dir) if rel_dir else root
        gi = os.path.join(full_dir, ".gitignore")
        pushed = False
        if os.path.isfile(gi) and not os.path.islink(gi):
            with open(gi, encoding="utf-8", errors="replace") as fh:
                stack.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(fh)))
                pushed = True
        try:
            entries = sorted(os.scandir(full_dir), key=lambda e: e.name)
        except OSError as e:
            yield Candidate(repo_id, rel_dir + "/", reason="unreadable", detail=str(e.strerror))
            entries = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if entry.name == ".git" and is_dir:
                continue  # git's own database, never content
            if ignored(rel, is_dir):
                continue
            if is_dir and outputs.is_partial(entry.name):
                continue  # a hidden build folder of a codetune command: transient, not content
            if is_dir:
                if _own_output(root, rel, entry.name):
                    yield Candidate(repo_id, rel + "/", reason="codetune_output",
                                    detail="a folder codetune wrote; not walked")
                elif entry.name in vendored:
                    yield Candidate(repo_id, rel + "/", reason="vendored",
                                    detail="folder not walked")
                else:
                    yield from walk(rel)
            else:
                yield _entry(repo_id, root, rel)
        if pushed:
            stack.pop()

    yield from walk("")


def iter_dataset_rows(spec: str, location: str, files: list[str] | None, cfg,
                      info: SourceInfo) -> Iterator[Candidate]:
    """Rows of a Hub dataset (streamed) or of local parquet/JSON/CSV files."""
    from datasets import load_dataset  # heavy: datasets, ~1 s

    try:
        if files is not None:
            ext = os.path.splitext(files[0])[1].lstrip(".")
            builder = {"jsonl": "json", "parquet": "parquet", "json": "json", "csv": "csv",
                       "arrow": "arrow"}[ext]
            ds = load_dataset(builder, data_files=files, split="train", streaming=True)
        else:
            ds = load_dataset(location, data_dir=cfg.hub_data_dir, split="train", streaming=True)
        rows = iter(ds)
        first = next(rows, None)
    except Exception as e:  # the datasets library raises many types for the same user problems
        raise CodetuneError(
            f"could not read dataset {spec}: {type(e).__name__}: {e}\n"
            "For a Hub dataset check its name, your network and `hf auth login` for gated "
            "ones; for local files check they are parquet/JSON lines with a text column."
        ) from None
    if first is None:
        return
    if cfg.text_column not in first:
        raise CodetuneError(
            f"dataset {spec} has no column '{cfg.text_column}' (columns: {', '.join(first)}); "
            "pass --text-column NAME"
        )
    default_repo = info.repo_id

    for i, row in enumerate(itertools.chain([first], rows)):
        info.files_listed += 1
        repo = row.get(cfg.repo_column) or default_repo
        path = row.get(cfg.path_column)
        has_path = bool(path)
        path = str(path) if has_path else f"row-{i:08d}"
        text = row[cfg.text_column]
        if not isinstance(text, str):
            yield Candidate(str(repo), path, reason="undecodable", has_path=has_path,
                            detail=f"column {cfg.text_column} is {type(text).__name__}")
            continue
        yield Candidate(str(repo), path, content=text, has_path=has_path)


# --------------------------------------------------------------------------- resolution


@dataclass
class Source:
    info: SourceInfo
    candidates: Iterator[Candidate]


def _split_ref(spec: str) -> tuple[str, str | None]:
    """`URL#ref` -> (URL, ref). `#` never occurs in git URLs, so this is unambiguous."""
    if "#" in spec:
        url, ref = spec.rsplit("#", 1)
        return url, ref or None
    return spec, None


def open_source(spec: str, cfg, cache_dir: Path) -> Source:
    """Turn a command-line SOURCE into a `Source` (see `codetune prepare --help` for the forms)."""
    if spec.startswith(("hf://datasets/", "hub:")):
        name = spec.removeprefix("hf://datasets/").removeprefix("hub:").strip("/")
        info = SourceInfo(spec, "dataset", name, name)
        return Source(info, iter_dataset_rows(spec, name, None, cfg, info))
    if spec.startswith("dataset:") or spec.lower().endswith(DATASET_EXTS) or any(
        ch in spec for ch in "*?["
    ) and not os.path.exists(spec):
        pattern = spec.removeprefix("dataset:")
        files = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise CodetuneError(f"no dataset file matches {pattern}; check the path")
        name = Path(files[0]).stem if len(files) == 1 else Path(files[0]).parent.name
        info = SourceInfo(spec, "dataset", name, os.path.abspath(pattern))
        info.extra["files"] = [os.path.abspath(f) for f in files]
        return Source(info, iter_dataset_rows(spec, pattern, files, cfg, info))

    url, ref = _split_ref(spec)
    is_local_dir = os.path.isdir(url) and not _GIT_URL.match(url)
    top = git_toplevel(url) if is_local_dir else None
    if _GIT_URL.match(url) or ref is not None or (is_local_dir and top is None and _is_bare(url)):
        cache = cache_dir
        path, sha = clone(url, ref, cache, cfg.git_submodules)
        info = SourceInfo(spec, "git", _named(cfg, repo_name_from_url(url)), url, commit=sha,
                          ref=ref)
        return Source(info, _listed(info, iter_git_files(info.repo_id, path, cfg.git_submodules)))
    if not os.path.exists(url):
        raise CodetuneError(
            f"source {spec} does not exist. A source is a folder, a git URL (optionally "
            "URL#branch), a Hub dataset (hf://datasets/OWNER/NAME) or parquet/JSON files."
        )
    if not is_local_dir:
        raise CodetuneError(f"source {spec} is a file; give the folder that holds it, or a "
                            "parquet/JSON dataset file")
    root = os.path.realpath(url)
    if top is not None:
        tracked = list(iter_git_files(os.path.basename(root), root, cfg.git_submodules))
        if tracked:
            commit, dirty = git_head(root)
            repo_id = _named(cfg, git_remote_name(root) or os.path.basename(root))
            for c in tracked:
                c.repo_id = repo_id
            info = SourceInfo(spec, "folder", repo_id, root, commit=commit, dirty=dirty)
            info.extra["git"] = True
            return Source(info, _listed(info, iter(tracked)))
        # Inside a work tree that tracks nothing here (an ignored folder, a fresh `git init`):
        # what the user pointed at is the files on disk, so walk them.
        print(f"note: git tracks no files under {url}; reading it as a plain folder "
              "(.gitignore files inside it still apply)", file=sys.stderr)
    info = SourceInfo(spec, "folder", _named(cfg, os.path.basename(root)), root)
    info.extra["git"] = False
    return Source(info, _listed(info, iter_folder_files(info.repo_id, root,
                                                        set(cfg.vendored_dirs))))


def _named(cfg, default: str) -> str:
    """A folder or git source's repository name: `prepare.repo_name` when set, else `default`
    (the git remote's org/repo, else the folder's name)."""
    return cfg.repo_name or default


def _is_bare(path: str) -> bool:
    return all(os.path.exists(os.path.join(path, p)) for p in ("HEAD", "objects", "refs"))


def _listed(info: SourceInfo, it: Iterator[Candidate]) -> Iterator[Candidate]:
    for c in it:
        info.files_listed += 1
        yield c
