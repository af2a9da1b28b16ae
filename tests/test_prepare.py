"""`codetune prepare` end to end on the nasty repository, and its safety guarantees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from codetune.data import store
from codetune.data.prepare import prepare, split_of
from codetune.data.sources import printable_path
from codetune.errors import CodetuneError

from . import nasty_repo
from .conftest import prep_cfg


def rows(out: Path) -> list[dict]:
    return [r for s in store.SPLITS for p in store.shard_paths(out, s)
            for r in pq.read_table(p).to_pylist()]


def dropped(out: Path) -> dict[str, str]:
    with open(out / "dropped.jsonl", encoding="utf-8") as fh:
        return {d["path"]: d["reason"] for d in map(json.loads, fh)}


def all_output_text(out: Path) -> str:
    """Every byte under the folder (as text) plus the decompressed parquet contents."""
    parts = []
    for p in out.rglob("*"):
        if p.is_file():
            parts.append(p.read_bytes().decode("utf-8", "replace"))
            if p.suffix == ".parquet":
                parts += [json.dumps(r) + str(r) for r in pq.read_table(p).to_pylist()]
    return "\n".join(parts)


def test_every_bad_file_gets_its_exact_reason(nasty, nasty_prepared):
    _, exp = nasty
    got = dropped(nasty_prepared)
    expected = {printable_path(k): v for k, v in exp.reasons.items()}
    assert got == expected


def test_good_files_kept_byte_for_byte(nasty, nasty_prepared):
    _, exp = nasty
    kept = {r["path"]: r for r in rows(nasty_prepared)}
    for path, raw in exp.good.items():
        r = kept[printable_path(path)]
        assert r["content"].encode("utf-8") == raw, path
        assert r["secrets_redacted"] == 0
    assert kept["src/shop/caf\\xe9.py"]["content"].startswith("def cafe():")
    assert kept["src/shop/orders.py"]["language"] == "Python"
    assert kept["web/cart.js"]["language"] == "JavaScript"
    assert kept["Makefile"]["language"] == "Makefile"
    assert kept["config/app.yaml"]["language"] == "YAML"
    # Every file is either kept or dropped with a reason: nothing vanishes silently.
    listed = set(kept) | set(dropped(nasty_prepared))
    on_disk = {printable_path(p) for p in list(exp.good) + list(exp.reasons)}
    assert on_disk <= listed


def test_secrets_redacted_in_place(nasty, nasty_prepared):
    repo, exp = nasty
    kept = {r["path"]: r for r in rows(nasty_prepared)}
    for path, secrets in exp.redacted.items():
        content = kept[path]["content"]
        assert "<SECRET>" in content
        assert kept[path]["secrets_redacted"] > 0
        for s in secrets:
            assert s not in content
    # Only the values change: the code around them is intact.
    settings = kept["src/shop/settings.py"]["content"]
    assert 'AWS_ACCESS_KEY_ID = "<SECRET>"' in settings
    assert "TIMEOUT = 30" in settings
    assert "@db.internal:5432/shop" in settings
    assert "def load():\n    return DEPLOY_KEY\n" in kept["src/shop/keys.py"]["content"]
    with open(nasty_prepared / "secrets.jsonl", encoding="utf-8") as fh:
        findings = [json.loads(line) for line in fh]
    kinds = {f["kind"] for f in findings if f["path"] == "src/shop/settings.py"}
    assert {"aws_access_key", "github_token", "slack_token", "jwt",
            "url_credentials"} <= kinds
    assert any(f["kind"] == "private_key" for f in findings if f["path"] == "src/shop/keys.py")
    aws = next(f for f in findings if f["kind"] == "aws_access_key")
    assert aws["line"] == 2 and aws["action"] == "redacted"


def test_no_secret_or_canary_anywhere_in_output(nasty, nasty_prepared):
    _, exp = nasty
    text = all_output_text(nasty_prepared)
    for s in exp.forbidden:
        assert s not in text, s
    assert not any(nasty_prepared.parent.glob(".*partial*"))


def test_notebook_keeps_code_cells_only(nasty, nasty_prepared):
    _, exp = nasty
    kept = {r["path"]: r for r in rows(nasty_prepared)}
    nb = kept[exp.notebook]
    assert "import pandas as pd" in nb["content"]
    assert "df.groupby('month').total.sum()" in nb["content"]
    assert "Revenue analysis" not in nb["content"]
    assert nb["language"] == "Python"


def test_manifest_and_report(nasty, nasty_prepared):
    man = store.load_manifest(nasty_prepared)
    repo, exp = nasty
    src = man["sources"][0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    assert src["commit"] == head and src["dirty"] is False
    n_rows = len(rows(nasty_prepared))
    assert man["splits"]["train"]["files"] + man["splits"]["validation"]["files"] == n_rows
    assert man["splits"]["train"]["bytes"] > 0
    assert man["splits"]["train"]["estimated_tokens"] > 0
    assert sum(man["dropped"].values()) == len(exp.reasons)
    assert man["content_hash"].startswith("sha256:")
    report = (nasty_prepared / "report.md").read_text()
    for reason in set(exp.reasons.values()):
        assert f"| {reason} |" in report
    assert "aws_access_key" in report


def test_loads_with_plain_datasets(nasty_prepared):
    import datasets

    ds = datasets.load_dataset(str(nasty_prepared))
    assert set(ds) == {"train"}  # valid_fraction=0: an empty split has no shard
    assert {"repo_id", "path", "language", "content", "split"} <= set(ds["train"].column_names)
    ds2 = datasets.load_dataset("parquet", data_dir=str(nasty_prepared / "data"))
    assert ds2["train"].num_rows == ds["train"].num_rows


def test_plain_folder_honours_gitignore_and_skips_fifos(nasty, tmp_path):
    repo, exp = nasty
    plain = tmp_path / "plain"
    shutil.copytree(repo, plain, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    os.mkfifo(plain / "src/shop/pipe.py")
    (plain / "tmp").mkdir()
    (plain / "tmp/scratch.py").write_text(f"X = '{nasty_repo.CANARY_IGNORED}'\n")
    out = tmp_path / "ds"
    prepare([str(plain)], out, prep_cfg(valid_fraction=0.0), progress=False)
    got = dropped(out)
    assert got["src/shop/pipe.py"] == "not_regular_file"
    assert got["node_modules/"] == "vendored" and got["build/"] == "vendored"
    assert "secrets.local.py" not in got and "tmp/scratch.py" not in got
    text = all_output_text(out)
    for s in exp.forbidden:
        assert s not in text
    assert {r["path"] for r in rows(out)} >= {"src/shop/orders.py", "web/cart.js"}


def test_same_result_for_any_worker_count(nasty, nasty_prepared, tmp_path):
    repo, _ = nasty
    out = tmp_path / "ds"
    prepare([str(repo)], out, prep_cfg(valid_fraction=0.0, workers=2), progress=False)
    assert store.load_manifest(out)["content_hash"] == \
        store.load_manifest(nasty_prepared)["content_hash"]


def test_drop_file_and_off_modes(nasty, tmp_path):
    repo, exp = nasty
    out = tmp_path / "drop"
    prepare([str(repo)], out, prep_cfg(valid_fraction=0.0, secrets="drop-file"), progress=False)
    got = dropped(out)
    assert got["src/shop/settings.py"] == "secret" and got["src/shop/keys.py"] == "secret"
    for s in exp.forbidden:
        assert s not in all_output_text(out)
    out2 = tmp_path / "off"
    prepare([str(repo)], out2, prep_cfg(valid_fraction=0.0, secrets="off"), progress=False)
    kept = {r["path"]: r["content"] for r in rows(out2)}
    assert nasty_repo.AWS_KEY in kept["src/shop/settings.py"]


# --------------------------------------------------------------------------- splits


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _module(i: int) -> str:
    return "\n".join(f"def handler_{i}_{j}(request, user_{j}):\n    value_{j} = "
                     f"request.get('field_{i}_{j}')\n    return compute_{j}(value_{j}, {i})\n"
                     for j in range(6))


def test_split_is_deterministic_and_by_file(tmp_path):
    files = {f"pkg/mod_{i}.py": _module(i) for i in range(60)}
    _write(tmp_path / "repo", files)
    cfg = prep_cfg(valid_fraction=0.2, seed=3)
    out = tmp_path / "ds"
    prepare([str(tmp_path / "repo")], out, cfg, progress=False)
    got = {r["path"]: r["split"] for r in rows(out)}
    assert got == {p: split_of("repo", p, cfg)[0] for p in files}
    assert 3 <= list(got.values()).count("validation") <= 25
    import datasets

    ds = datasets.load_dataset(str(out))
    assert ds["validation"].num_rows == list(got.values()).count("validation")
    assert set(ds["validation"]["split"]) == {"validation"}
    other = tmp_path / "ds2"
    prepare([str(tmp_path / "repo")], other, prep_cfg(valid_fraction=0.2, seed=4),
            progress=False)
    assert {r["path"]: r["split"] for r in rows(other)} != got


def test_near_duplicate_of_validation_file_removed_from_train(tmp_path):
    cfg = prep_cfg(valid_fraction=0.5, seed=0)
    # Find names landing in each split, then make the train file a near copy of the valid one.
    names = [f"m{i}.py" for i in range(40)]
    val = [n for n in names if split_of("repo", n, cfg)[0] == "validation"]
    train = [n for n in names if split_of("repo", n, cfg)[0] == "train"]
    base = _module(7)
    near = base.replace("compute_0(value_0, 7)", "compute_0(value_0, 8)")
    # Train copies both before and after the validation file in listing order.
    first_train = min(t for t in train if t < val[0]) if any(t < val[0] for t in train) else None
    files = {val[0]: base, max(train): near, val[1]: _module(1), train[-2]: base}
    if first_train:
        files[first_train] = near
    _write(tmp_path / "repo", files)
    out = tmp_path / "ds"
    prepare([str(tmp_path / "repo")], out, cfg, progress=False)
    got = dropped(out)
    assert got[max(train)] == "leaks_validation"
    assert got[train[-2]] == "leaks_validation"
    if first_train:
        assert got[first_train] == "leaks_validation"
    kept = {r["path"]: r["split"] for r in rows(out)}
    assert kept[val[0]] == "validation" and kept[val[1]] == "validation"


def test_split_by_repo_holds_out_whole_repositories(tmp_path):
    cfg = prep_cfg(valid_fraction=0.3, split_by="repo", seed=1)
    repos = [f"svc{i}" for i in range(10)]
    for i, r in enumerate(repos):
        _write(tmp_path / r, {f"a{j}.py": _module(i * 10 + j) for j in range(3)})
    out = tmp_path / "ds"
    prepare([str(tmp_path / r) for r in repos], out, cfg, progress=False)
    by_repo: dict[str, set[str]] = {}
    for r in rows(out):
        by_repo.setdefault(r["repo_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_repo.values())
    assert {"train", "validation"} == set().union(*by_repo.values())


def test_tiny_corpus_still_gets_a_validation_file(tmp_path):
    _write(tmp_path / "repo", {f"f{i}.py": _module(i) for i in range(4)})
    cfg = prep_cfg(valid_fraction=0.01)
    out = tmp_path / "ds"
    summary = prepare([str(tmp_path / "repo")], out, cfg, progress=False)
    assert summary.kept["validation"] == 1 and summary.kept["train"] == 3
    assert summary.warnings


# --------------------------------------------------------------------------- output safety


def test_existing_output_refused_and_overwrite_is_atomic(tmp_path, monkeypatch):
    _write(tmp_path / "repo", {"a.py": _module(1), "b.py": _module(2)})
    out = tmp_path / "ds"
    prepare([str(tmp_path / "repo")], out, prep_cfg(), progress=False)
    before = store.load_manifest(out)["content_hash"]
    with pytest.raises(CodetuneError, match="--overwrite"):
        prepare([str(tmp_path / "repo")], out, prep_cfg(), progress=False)

    # A run that dies half-way leaves the old dataset untouched and no partial folder.
    from codetune.data import filters

    def boom(self, cand):
        raise KeyboardInterrupt

    monkeypatch.setattr(filters.FileFilter, "process", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(tmp_path / "repo")], out, prep_cfg(), overwrite=True, progress=False)
    assert store.load_manifest(out)["content_hash"] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "repo"]
    monkeypatch.undo()
    (tmp_path / "repo" / "c.py").write_text(_module(3))
    prepare([str(tmp_path / "repo")], out, prep_cfg(), overwrite=True, progress=False)
    assert store.load_manifest(out)["content_hash"] != before


def test_interrupted_first_run_leaves_nothing(tmp_path, monkeypatch):
    _write(tmp_path / "repo", {"a.py": _module(1)})
    from codetune.data import store as st

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "write_shards", fail)
    with pytest.raises(CodetuneError, match="full"):
        prepare([str(tmp_path / "repo")], tmp_path / "ds", prep_cfg(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_overwrite_never_deletes_a_foreign_folder(tmp_path):
    _write(tmp_path / "repo", {"a.py": _module(1)})
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(CodetuneError, match="not a codetune dataset"):
        prepare([str(tmp_path / "repo")], precious, prep_cfg(), overwrite=True, progress=False)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_later_stages_refuse_incomplete_dataset(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(CodetuneError, match="not a prepared dataset"):
        store.load_manifest(tmp_path / "half")
    (tmp_path / "half" / "manifest.json").write_text("{not json")
    with pytest.raises(CodetuneError, match="corrupt"):
        store.load_manifest(tmp_path / "half")


def test_output_inside_source_is_refused_before_anything_is_written(tmp_path):
    _write(tmp_path / "repo", {"a.py": _module(1), "b.py": _module(2)})
    out = tmp_path / "repo" / "dataset"
    with pytest.raises(CodetuneError, match="lies inside the source"):
        prepare([str(tmp_path / "repo")], out, prep_cfg(valid_fraction=0.0), progress=False)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["a.py", "b.py"]
