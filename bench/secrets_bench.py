"""Secrets scanner on real configuration files: what it redacts, and how fast it scans.

    python bench/secrets_bench.py SDIST_OR_FOLDER... [--baseline-rev HEAD] [--tsv FILE]
                                  [--code DIR] [--repeat 3] [--worst]

SDIST_OR_FOLDER: source distributions (.tar.gz, .zip) or folders, e.g. from
`pip download --no-deps --no-binary :all: NAME==VER -d DIR` (nothing is downloaded here).

Prints, for the same files in the same run:
- every redaction in configuration files (YAML, ini/cfg/conf, TOML, .properties, .env, by
  `file_format`) and in scripts (shell, Makefile, Dockerfile), with the line it was on, so each
  can be classified by eye; `--tsv` writes them to a file (file, line, kind, value, line text);
- how many of them the scanner of `--baseline-rev` (default: git HEAD, loaded from git into a
  temporary package) found, which sees the text only;
- scan speed on one core, MB/s, new scanner (with the file's path) against the baseline (text
  only), each file timed best of `--repeat` with the two interleaved, on the configuration files, on the scripts and on the Python code
  (`--code`, default: this interpreter's standard library); `--worst`: also a configuration
  file where every line is a candidate (`password: <random>`).

Not part of the test suite; the values printed come from public packages.
"""

from __future__ import annotations

import argparse
import importlib
import io
import random
import string
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from codetune.data.secrets import redact, scan  # noqa: E402
from codetune.data.secrets.config import _shellish, file_format  # noqa: E402

MAX_BYTES = 1_000_000


def load_baseline(rev: str, tmp: Path):
    """The `scan` of the secrets package at git revision `rev`, importable beside this one."""
    pkg = "codetune.data.secrets"
    src = "src/codetune/data/secrets"
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:{src}"],
                           check=True, capture_output=True, text=True).stdout.split()
    dest = tmp / "secrets_baseline"
    dest.mkdir()
    for name in names:
        if name.endswith(".py"):
            body = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{src}/{name}"],
                                  check=True, capture_output=True, text=True).stdout
            (dest / name).write_text(body.replace(pkg, "secrets_baseline"), encoding="utf-8")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("secrets_baseline").scan


def members(source: Path):
    """(path, bytes) of every file in an sdist or below a folder."""
    name = source.name
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.is_file() and not p.is_symlink() and p.stat().st_size <= MAX_BYTES:
                yield str(p.relative_to(source)), p.read_bytes()
    elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        with tarfile.open(source) as tf:
            for m in tf:
                if m.isfile() and m.size <= MAX_BYTES:
                    yield m.name, tf.extractfile(m).read()
    elif name.endswith(".zip"):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if not info.is_dir() and info.file_size <= MAX_BYTES:
                    yield info.filename, zf.read(info)


def collect(sources: list[Path]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(configuration files, scripts) as (path, text)."""
    configs, scripts = [], []
    for source in sources:
        for path, raw in members(source):
            if b"\0" in raw[:8000]:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if file_format(path):
                configs.append((path, text))
            elif _shellish(path, None):
                scripts.append((path, text))
    return configs, scripts


def line_of(text: str, pos: int) -> str:
    return text[text.rfind("\n", 0, pos) + 1:(text.find("\n", pos) + 1 or len(text) + 1) - 1]


def speeds(old_fn, new_fn, files: list[tuple[str, str]], repeat: int) -> tuple[float, float]:
    """MB/s of the baseline (text only) and the new scanner (text and path) over `files`: each
    file scanned by one then the other, `repeat` times, its best time for each summed, so that
    bursts of load from other jobs hit both alike."""
    total = sum(len(t.encode("utf-8")) for _, t in files)
    sums = [0.0, 0.0]
    for path, text in files:
        best = [float("inf"), float("inf")]
        for _ in range(repeat):
            t0 = time.perf_counter()
            old_fn(text)
            t1 = time.perf_counter()
            new_fn(text, path)
            t2 = time.perf_counter()
            best = [min(best[0], t1 - t0), min(best[1], t2 - t1)]
        sums = [sums[0] + best[0], sums[1] + best[1]]
    return total / 1e6 / sums[0], total / 1e6 / sums[1]


def code_corpus(folder: Path, limit_mb: float = 20) -> list[tuple[str, str]]:
    out, total = [], 0
    for p in sorted(folder.rglob("*.py")):
        if "site-packages" in p.parts or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append((str(p.relative_to(folder)), text))
        total += len(text)
        if total > limit_mb * 1e6:
            break
    return out


def worst_case(n_lines: int = 20_000) -> list[tuple[str, str]]:
    rng = random.Random(0)
    chars = string.ascii_letters + string.digits + "!@%^&*-_+=."
    lines = [f"  db_password_{i}: " + "".join(rng.choice(chars) for _ in range(rng.randint(6, 32)))
             for i in range(n_lines)]
    return [("worst/config.yaml", "\n".join(lines) + "\n")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", type=Path)
    ap.add_argument("--baseline-rev", default="HEAD")
    ap.add_argument("--tsv", type=Path)
    ap.add_argument("--code", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worst", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="counts only, no list of redactions")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base_scan = load_baseline(args.baseline_rev, Path(tmp))
        configs, scripts = collect(args.sources)
        rows = []
        for group, files in (("config", configs), ("script", scripts)):
            new_n = old_n = 0
            by_kind: Counter[str] = Counter()
            for path, text in files:
                found = scan(text, path)
                old_n += len(base_scan(text))
                new_n += len(found)
                for f in found:
                    by_kind[f.kind] += 1
                    value = "".join(text[a:b] for a, b in (f.pieces or ((f.start, f.end),)))
                    shown = redact(line_of(text, f.start), []) if f.pieces else line_of(text,
                                                                                       f.start)
                    rows.append((group, path, f.line, f.kind, value, shown.strip()))
            size = sum(len(t.encode()) for _, t in files) / 1e6
            print(f"{group}: {len(files)} files, {size:.2f} MB; redactions: new {new_n} "
                  f"(by kind {dict(by_kind)}), baseline {old_n}")
        if not args.quiet:
            for group, path, line, kind, value, shown in rows:
                print(f"  [{group}] {path}:{line} {kind} {value[:60]!r} | {shown[:120]}")
        if args.tsv:
            with open(args.tsv, "w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write("\t".join(str(x).replace("\t", " ").replace("\n", "\\n")
                                       for x in r) + "\n")

        corpora = [("config", configs), ("scripts", scripts),
                   ("python code", code_corpus(args.code))]
        if args.worst:
            corpora.append(("worst case config", worst_case()))
        print(f"\nscan speed, one core, MB/s (each file best of {args.repeat}, interleaved)")
        for name, files in corpora:
            if not files:
                continue
            mb = sum(len(t.encode()) for _, t in files) / 1e6
            old, new = speeds(base_scan, scan, files, args.repeat)
            print(f"  {name:18s} {mb:7.2f} MB  baseline {old:6.1f}  new {new:6.1f}  "
                  f"ratio {new / old:.2f}")


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    main()
