"""Sources other than a local work tree: git URLs (shallow, no hooks, submodules on request)
and datasets (local parquet/JSON standing in for the Hub, which the tests cannot reach)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codetune.data import store
from codetune.data.prepare import prepare
from codetune.errors import CodetuneError

from .conftest import prep_cfg

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "c", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


def contents(out: Path) -> dict[str, dict]:
    return {r["path"]: r for s in store.SPLITS for p in store.shard_paths(out, s)
            for r in pq.read_table(p).to_pylist()}


CODE = "def add(a, b):\n    return a + b\n"


def test_git_url_cloned_shallow_at_ref_without_hooks(tmp_path, monkeypatch):
    upstream = tmp_path / "upstream"
    first = make_repo(upstream, {"lib/add.py": CODE})
    git("checkout", "-q", "-b", "feature", cwd=upstream)
    (upstream / "lib/mul.py").write_text("def mul(a, b):\n    return a * b\n")
    git("add", "-A", cwd=upstream)
    git("commit", "-q", "-m", "feature", cwd=upstream)
    feature = git("rev-parse", "HEAD", cwd=upstream)
    git("checkout", "-q", "main", cwd=upstream)
    bare = tmp_path / "shop.git"
    git("clone", "-q", "--bare", str(upstream), str(bare), cwd=tmp_path)

    # A global hook that would leave a marker if any git hook ran during the clone.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marker = tmp_path / "HOOK_RAN"
    for name in ("post-checkout", "reference-transaction", "post-merge"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / name).chmod(0o755)
    gcfg = tmp_path / "gitconfig"
    gcfg.write_text(f"[core]\n\thooksPath = {hooks}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gcfg))

    url = bare.as_uri()
    out = tmp_path / "ds"
    prepare([url + "#feature"], out, prep_cfg(valid_fraction=0.0), progress=False)
    src = store.load_manifest(out)["sources"][0]
    assert src["kind"] == "git" and src["commit"] == feature and src["ref"] == "feature"
    assert set(contents(out)) == {"lib/add.py", "lib/mul.py"}
    assert not marker.exists()

    out2 = tmp_path / "ds2"
    prepare([str(bare)], out2, prep_cfg(valid_fraction=0.0), progress=False)  # a bare repo path
    assert store.load_manifest(out2)["sources"][0]["commit"] == first
    clones = list((tmp_path / "cache" / "git").iterdir())
    assert clones and all(
        git("rev-parse", "--is-shallow-repository", cwd=c) == "true" for c in clones)


def test_bad_git_url_is_a_clear_error(tmp_path):
    with pytest.raises(CodetuneError, match="could not fetch"):
        prepare([(tmp_path / "nope.git").as_uri()], tmp_path / "ds", prep_cfg(), progress=False)
    assert not (tmp_path / "ds").exists()


def test_submodules_only_when_asked(tmp_path):
    make_repo(tmp_path / "sub", {"inner.py": "def inner():\n    return 'from the submodule'\n"})
    make_repo(tmp_path / "main", {"outer.py": CODE})
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(tmp_path / "sub"),
        "deps/sub", cwd=tmp_path / "main")
    git("commit", "-q", "-m", "sub", cwd=tmp_path / "main")
    out = tmp_path / "ds"
    prepare([str(tmp_path / "main")], out, prep_cfg(valid_fraction=0.0), progress=False)
    assert "deps/sub/inner.py" not in contents(out)
    with open(out / "dropped.jsonl") as fh:
        assert {"deps/sub": "submodule"}.items() <= {
            d["path"]: d["reason"] for d in map(json.loads, fh)}.items()
    out2 = tmp_path / "ds2"
    prepare([str(tmp_path / "main")], out2, prep_cfg(valid_fraction=0.0, git_submodules=True),
            progress=False)
    assert "deps/sub/inner.py" in contents(out2)


def test_dataset_files_parquet_and_jsonl(tmp_path):
    rows = [{"repo_id": "org/a", "path": "x.py", "content": CODE},
            {"repo_id": "org/a", "path": "y.py", "content": CODE},  # exact duplicate
            {"repo_id": "org/b", "path": "z.js", "content": "export const z = () => 42;\n"},
            {"repo_id": "org/b", "path": "p.png", "content": "not really"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "stack.parquet")
    out = tmp_path / "ds"
    prepare([str(tmp_path / "stack.parquet")], out, prep_cfg(valid_fraction=0.0),
            progress=False)
    got = contents(out)
    assert set(got) == {"x.py", "z.js"} and got["z.js"]["repo_id"] == "org/b"
    man = store.load_manifest(out)
    assert man["dropped"] == {"exact_duplicate": 1, "non_code": 1}

    (tmp_path / "rows.jsonl").write_text("\n".join(
        json.dumps({"text": r["content"]}) for r in rows[:3]) + "\n")
    out2 = tmp_path / "ds2"
    prepare(["dataset:" + str(tmp_path / "rows.jsonl")], out2,
            prep_cfg(valid_fraction=0.0, text_column="text"), progress=False)
    assert len(contents(out2)) == 2  # no path column: content filters and dedup still apply


def test_dataset_without_text_column_names_the_flag(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"code": CODE}]), tmp_path / "d.parquet")
    with pytest.raises(CodetuneError, match="no column 'content'.*--text-column"):
        prepare([str(tmp_path / "d.parquet")], tmp_path / "ds", prep_cfg(), progress=False)
    assert not (tmp_path / "ds").exists()


def test_hub_dataset_offline_is_a_clear_error(tmp_path):
    # The real Hub path (load_dataset(name, streaming=True)); offline here, so it must fail
    # with a message that says what to check, and write nothing.
    with pytest.raises(CodetuneError, match="could not read dataset hf://datasets/smangrul"):
        prepare(["hf://datasets/smangrul/hf-stack-v1"], tmp_path / "ds", prep_cfg(),
                progress=False)
    assert not (tmp_path / "ds").exists()


def test_repo_name_fixes_the_split_in_every_clone(tmp_path):
    """A folder inside a clone is named after the clone's remote, and the split hashes that
    name: `prepare.repo_name` names the repository, so two clones give the same split."""
    files = {f"pkg/m{i:02d}.py": f"def f{i}(x):\n    return x * {i} + {i * 7}\n"
             for i in range(40)}
    make_repo(tmp_path / "upstream", {f"app/{k}": v for k, v in files.items()})
    splits = []
    for n, remote in enumerate(["/srv/one/main", "/ci/two/checkout"]):
        clone = tmp_path / f"clone{n}"
        git("clone", "-q", str(tmp_path / "upstream"), str(clone), cwd=tmp_path)
        git("remote", "set-url", "origin", remote, cwd=clone)
        for name in (None, "acme/app"):
            out = tmp_path / f"ds{n}-{name is None}"
            prepare([str(clone / "app")], out, prep_cfg(valid_fraction=0.3, repo_name=name),
                    progress=False)
            got = contents(out)
            assert len(got) == 40
            ids = {r["repo_id"] for r in got.values()}
            assert ids == {name or "/".join(remote.split("/")[-2:])}
            assert store.load_manifest(out)["sources"][0]["repo_id"] == ids.pop()
            splits.append((name, {p for p in store.shard_paths(out, "validation")
                                  for p in pq.read_table(p).column("path").to_pylist()}))
    named = [s for name, s in splits if name]
    unnamed = [s for name, s in splits if not name]
    assert named[0] == named[1] and named[0]
    assert unnamed[0] != unnamed[1]  # what the name fixes: the remote decided the split


def test_repo_name_needs_one_folder_source(tmp_path):
    make_repo(tmp_path / "a", {"a.py": CODE})
    make_repo(tmp_path / "b", {"b.py": CODE})
    pq.write_table(pa.Table.from_pylist([{"content": CODE}]), tmp_path / "d.parquet")
    for sources in ([tmp_path / "a", tmp_path / "b"], [tmp_path / "d.parquet"]):
        with pytest.raises(CodetuneError, match="--repo-name names the repository of a single"):
            prepare([str(s) for s in sources], tmp_path / "ds", prep_cfg(repo_name="x/y"),
                    progress=False)
        assert not (tmp_path / "ds").exists()
