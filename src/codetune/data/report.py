"""What `prepare` tells the user: a progress bar while scanning, `report.md` in the dataset
folder, and a summary table on the terminal."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from codetune.data.filters import REASONS
from codetune.data.store import SPLITS

_MAX_SECRET_ROWS = 200


@contextlib.contextmanager
def progress_bar(total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(num_bytes)`, called once per file."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )  # heavy: rich, ~70 ms

    columns = [SpinnerColumn(), TextColumn("scanning files"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[mb]:.1f} MB"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as prog:
        task = prog.add_task("scan", total=total, mb=0.0)
        done = [0]

        def advance(nbytes: int) -> None:
            done[0] += nbytes
            prog.update(task, advance=1, mb=done[0] / 1e6)

        yield advance


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write(folder: Path, summary, infos, cfg) -> None:
    """report.md: sources, kept per split and language, drops per reason with examples,
    secrets (masked)."""
    lines = ["# codetune prepare report", ""]
    total_kept = sum(summary.kept.values())
    total_drop = sum(summary.dropped.values())
    lines += [
        f"Kept **{total_kept}** files ({sum(summary.bytes.values()) / 1e6:.2f} MB), dropped "
        f"**{total_drop}**, from {summary.input_bytes / 1e6:.2f} MB read in "
        f"{summary.seconds:.1f} s. Content hash `{summary.content_hash}`.", "",
        "## Sources", "", "| source | kind | repository | commit | entries listed |",
        "|---|---|---|---|---|",
    ]
    for i in infos:
        commit = (i.commit or "-")[:12] + (" (uncommitted changes)" if i.dirty else "")
        lines.append(f"| `{_md_escape(i.spec)}` | {i.kind} | {_md_escape(i.repo_id)} | "
                     f"{commit} | {i.files_listed} |")
    lines += ["", "## Kept", "", "| split | files | MB |", "|---|---|---|"]
    for s in SPLITS:
        lines.append(f"| {s} | {summary.kept[s]} | {summary.bytes[s] / 1e6:.2f} |")
    lines += ["", "| language | files | MB |", "|---|---|---|"]
    for lang, d in summary.languages.items():
        lines.append(f"| {lang} | {d['files']} | {d['bytes'] / 1e6:.3f} |")
    lines += ["", "## Dropped", "",
              "Every dropped file is listed in `dropped.jsonl` with its reason.", "",
              "| reason | files | meaning | examples |", "|---|---|---|---|"]
    for reason, n in summary.dropped.most_common():
        ex = "<br>".join(f"`{_md_escape(label)}`" + (f" ({_md_escape(d)})" if d else "")
                         for label, d in summary.examples.get(reason, [])[:3])
        lines.append(f"| {reason} | {n} | {REASONS.get(reason, '')} | {ex} |")
    lines += ["", "## Secrets", ""]
    if cfg.secrets == "off":
        lines.append("Secret scanning was off (`--secrets off`).")
    elif not summary.secrets_found:
        lines.append("No credentials found.")
    else:
        verb = "replaced by " + f"`{cfg.secret_placeholder}`" if cfg.secrets == "redact" \
            else "dropped with their files"
        lines += [f"{summary.secrets_found} credentials in {summary.files_with_secrets} files, "
                  f"{verb}. Values are masked; all findings are in `secrets.jsonl`.", "",
                  "| file | line | kind | value (masked) |", "|---|---|---|---|"]
        with open(folder / "secrets.jsonl", encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                if n >= _MAX_SECRET_ROWS:
                    lines.append(f"| ... | | | {summary.secrets_found - n} more in secrets.jsonl |")
                    break
                f = json.loads(line)
                lines.append(f"| `{_md_escape(f['repo_id'] + '/' + f['path'])}` | {f['line']} | "
                             f"{f['kind']} | `{_md_escape(f['masked'])}` |")
    if summary.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in summary.warnings]
    (folder / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def print_summary(summary) -> None:
    from rich.console import Console  # heavy: rich, ~70 ms
    from rich.table import Table  # heavy: rich

    console = Console(stderr=False)
    t = Table(title=f"codetune prepare -> {summary.out_dir}", show_edge=False)
    t.add_column("")
    t.add_column("files", justify="right")
    t.add_column("MB", justify="right")
    for s in SPLITS:
        t.add_row(f"kept: {s}", str(summary.kept[s]), f"{summary.bytes[s] / 1e6:.2f}")
    for reason, n in summary.dropped.most_common():
        t.add_row(f"dropped: {reason}", str(n), "")
    console.print(t)
    rate = summary.input_bytes / 1e6 / max(summary.seconds, 1e-9)
    console.print(f"{summary.input_bytes / 1e6:.2f} MB scanned in {summary.seconds:.1f} s "
                  f"({rate:.1f} MB/s); {summary.secrets_found} secrets in "
                  f"{summary.files_with_secrets} files; report: {summary.out_dir / 'report.md'}")
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
