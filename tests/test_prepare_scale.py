"""`prepare --executor local|ray|slurm` (codetune.data.scale): the same dataset as the
single-machine path, resumable, and one-line failures for what cannot run."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from codetune.data import store
from codetune.data.prepare import prepare
from codetune.errors import CodetuneError

from .conftest import prep_cfg

pytest.importorskip("datatrove", reason='needs the scale extra: pip install "codetune[scale]"')


def _module(i: int, tweak: str = "") -> str:
    return "\n".join(f"def handler_{i}_{j}(request, user_{j}):\n    value_{j} = "
                     f"request.get('field_{i}_{j}')\n    return compute_{j}(value_{j}, {i})\n"
                     for j in range(6)) + tweak


@pytest.fixture(scope="session")
def corpus(nasty, tmp_path_factory) -> list[str]:
    """Three folders and a JSON-lines dataset with exact and near copies across repositories
    and splits (so leaks both ways), secrets and every kind of bad file (the nasty repo)."""
    base = tmp_path_factory.mktemp("scale")
    repo, _ = nasty
    families = {f: _module(100 + f) for f in range(6)}
    for r, name in enumerate(("svc_a", "svc_b")):
        root = base / name
        for i in range(25):
            p = root / "pkg" / f"mod_{i}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(_module(i + 30 * r))
        for f, text in families.items():
            (root / f"copy_{f}.py").write_text(text)  # exact copies in both repos
            (root / f"near_{f}.py").write_text(text + f"\n# revision {r}\n")  # near copies
        (root / "empty.py").write_text("   \n")
    rows = [{"repo_id": "dump/x", "path": f"d/{i}.py", "content": _module(200 + i)}
            for i in range(12)]
    rows += [{"repo_id": "dump/x", "path": "d/copy.py", "content": families[2]},
             {"repo_id": "dump/x", "path": "d/k.py", "content": "KEY = 'AKIA"
              "IOSFODNN7EXAMPLE'\nprint(KEY)\n"}]
    data = base / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [str(repo), str(base / "svc_a"), str(base / "svc_b"), str(data)]


CFG = dict(valid_fraction=0.3, seed=5)


@pytest.fixture(scope="session")
def reference(corpus, tmp_path_factory) -> Path:
    """The single-machine, single-process dataset every executor must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    prepare(corpus, out, prep_cfg(**CFG), progress=False)
    return out


def _rows(out: Path) -> list[dict]:
    return sorted((r for s in store.SPLITS for p in store.shard_paths(out, s)
                   for r in pq.read_table(p).to_pylist()),
                  key=lambda r: (r["repo_id"], r["path"]))


def _jsonl(path: Path) -> Counter:
    with open(path, encoding="utf-8") as fh:
        return Counter(fh.read().splitlines())


def assert_same_dataset(got: Path, want: Path) -> None:
    assert _rows(got) == _rows(want)  # same files per split, byte-identical, same redactions
    a, b = store.load_manifest(got), store.load_manifest(want)
    assert a["content_hash"] == b["content_hash"]
    for key in ("splits", "dropped", "secrets", "input_bytes", "languages", "warnings"):
        assert a[key] == b[key], key
    for name in ("dropped.jsonl", "secrets.jsonl"):
        assert _jsonl(got / name) == _jsonl(want / name), name


def test_reference_exercises_dedup_leaks_and_secrets(reference):
    man = store.load_manifest(reference)
    for reason in ("exact_duplicate", "near_duplicate", "leaks_validation", "empty", "vendored"):
        assert man["dropped"].get(reason), reason
    assert man["secrets"]["findings"] > 0 and man["splits"]["validation"]["files"] > 0


def test_local_executor_with_workers_gives_the_same_dataset(corpus, reference, tmp_path):
    out = tmp_path / "ds"
    cfg = prep_cfg(**CFG, executor="local", workers=2, tasks=3)
    summary = prepare(corpus, out, cfg, progress=False)
    assert_same_dataset(out, reference)
    man = store.load_manifest(reference)
    assert summary.kept == {s: man["splits"][s]["files"] for s in store.SPLITS}
    assert summary.content_hash == store.load_manifest(reference)["content_hash"]
    assert not (tmp_path / ".ds.partial-scale").exists()  # the work folder is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_task_count_does_not_change_the_dataset(corpus, reference, tmp_path):
    out = tmp_path / "ds"
    prepare(corpus, out, prep_cfg(**CFG, executor="local", workers=1, tasks=7),
            progress=False)
    assert_same_dataset(out, reference)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (2 CPUs) for the session; prepare uses it as a session it did not open."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_gives_the_same_dataset(ray_cluster, corpus, reference, tmp_path,
                                             monkeypatch):
    from codetune.data.scale import executors

    here: list[str] = []
    real = executors.run_here
    monkeypatch.setattr(executors, "run_here", lambda ex: (here.append(ex.logging_dir.path),
                                                           real(ex)))
    out = tmp_path / "ds"
    prepare(corpus, out, prep_cfg(**CFG, executor="ray", workers=2, tasks=2), progress=False)
    assert_same_dataset(out, reference)
    assert not (tmp_path / ".ds.partial-scale").exists()
    # a Ray on this machine: the final task ran here, beside the Ray scan tasks
    assert executors.ray_is_local() and [Path(p).name for p in here] == ["final"]


@pytest.mark.slow
def test_ray_task_error_is_one_line_naming_the_stage(ray_cluster, corpus, tmp_path,
                                                     monkeypatch):
    from codetune.data.scale import steps

    real = steps.write_plan_chunk
    monkeypatch.setattr(steps, "write_plan_chunk", lambda work, k, rows: (
        steps.plan_file(work, k).write_text("not json") if k == 1 else real(work, k, rows)))
    out = tmp_path / "ds"
    cfg = prep_cfg(executor="ray", workers=2, tasks=2, **CFG)
    with pytest.raises(CodetuneError, match=r"^the scan stage did not finish \(1 of 2 tasks "
                                            r"left; JSONDecodeError: .*again to resume"):
        prepare(corpus[1:3], out, cfg, progress=False)
    assert not out.exists()


def test_killed_run_resumes_without_redoing_finished_tasks(corpus, reference, tmp_path,
                                                           monkeypatch):
    from codetune.data.scale import steps

    # one worker's tasks run in one forked process: what they did is written to files
    ran_log, failed_log = tmp_path / "ran", tmp_path / "failed"

    def logged(log) -> list[int]:
        return [int(x) for x in log.read_text().split()] if log.exists() else []

    real = steps.FilterFiles.run

    def flaky(self, data, rank=0, world_size=1):
        with open(ran_log, "a") as fh:
            fh.write(f"{rank}\n")
        if rank == 1 and not failed_log.exists():  # task 1 dies the first time, mid-stream
            failed_log.write_text("1")
            for i, doc in enumerate(real(self, data, rank, world_size)):
                if i == 3:
                    raise RuntimeError("node lost")
                yield doc
            return
        yield from real(self, data, rank, world_size)

    monkeypatch.setattr(steps.FilterFiles, "run", flaky)
    out = tmp_path / "ds"
    cfg = prep_cfg(**CFG, executor="local", workers=1, tasks=3)
    with pytest.raises(CodetuneError, match=r"scan stage did not finish.*node lost.*again to "
                                            r"resume"):
        prepare(corpus, out, cfg, progress=False)
    assert not out.exists()  # nothing reaches DIR before the final step
    work = tmp_path / ".ds.partial-scale"
    assert os.listdir(work / "logs" / "scan" / "completions") == ["00000"]
    done = sorted(p.name for p in (work / "results").iterdir())
    chunks = json.loads((work / "state.json").read_text())["chunks"]
    assert done == [f"{k:06d}.rows" for k in range(0, chunks, 3)]  # task 0's chunks only
    # the chunk task 1 died in left no partial file behind (a file left open by it, closed
    # whenever it is collected, must not write into the resumed attempt's file)

    ran_log.unlink()
    written_log = tmp_path / "written"
    close = steps.WriteResults._close_chunk

    def closing(work, k, fh):
        with open(written_log, "a") as log:
            log.write(f"{k}\n")
        return close(work, k, fh)

    monkeypatch.setattr(steps.WriteResults, "_close_chunk", staticmethod(closing))
    summary = prepare(corpus, out, cfg, progress=False)
    assert logged(ran_log) == [1, 2]  # task 0 finished before: not run again
    written = logged(written_log)
    assert sorted(written) == [k for k in range(chunks) if k % 3]  # each other chunk once
    assert not work.exists()
    assert_same_dataset(out, reference)
    assert summary.content_hash == store.load_manifest(reference)["content_hash"]


def test_failed_task_beside_the_final_task_is_the_error_and_resumes(corpus, reference,
                                                                    tmp_path, monkeypatch):
    """workers=2: the final task runs here while the scan's processes run; a scan task that
    dies stops it at the first chunk it lacks, and the scan's error is the one reported."""
    from codetune.data.scale import steps

    real = steps.FilterFiles.run

    def dies(self, data, rank=0, world_size=1):
        for i, doc in enumerate(real(self, data, rank, world_size)):
            if rank == 1 and i == 3:
                raise RuntimeError("node lost")
            yield doc

    out = tmp_path / "ds"
    cfg = prep_cfg(**CFG, executor="local", workers=2, tasks=2)
    with monkeypatch.context() as m:
        m.setattr(steps.FilterFiles, "run", dies)  # inherited by the forked task processes
        with pytest.raises(CodetuneError, match=r"scan stage did not finish.*node lost"):
            prepare(corpus, out, cfg, progress=False)
    assert not out.exists()
    work = tmp_path / ".ds.partial-scale"
    assert not (work / "logs" / "final" / "completions").exists()
    assert not [p for p in (work / "results").iterdir() if p.suffix != ".rows"]  # no partials
    prepare(corpus, out, cfg, progress=False)
    assert_same_dataset(out, reference)


def test_results_files_round_trip(tmp_path):
    """A results file gives back each file's outcome as the filters made it: odd path bytes
    (surrogate escapes), redactions, no signature, dropped files without content."""
    import numpy as np

    from codetune.data.filters import Result
    from codetune.data.scale import steps

    sig = np.arange(128, dtype=np.uint32) * 2**25
    results = [
        Result("org/r\udce9", "caf\udce9/\u00e9t\u00e9.py", language="Python",
               content="x = '\udcff' + '\u00e9'\n\n", sha256=bytes(range(32)),
               signature=sig, secrets=[(3, "AWS", "AKIA****")], num_bytes=41),
        Result("org/r", "empty.py", reason="empty", detail="blank", num_bytes=3),
        Result("org/r", "k.py", language="Python", content="", sha256=b"\1" * 32,
               num_bytes=0),
    ]
    (tmp_path / "results").mkdir()
    with open(steps.results_file(tmp_path, 0), "wb") as fh:
        for seq, res in enumerate(results):
            steps.write_result(fh, seq * 7, res)
    back = list(steps.read_results(steps.results_file(tmp_path, 0)))
    assert [seq for seq, _, _ in back] == [0, 7, 14]
    for want, (_, got, nbytes) in zip(results, back, strict=True):
        assert np.array_equal(got.signature, want.signature) if want.signature is not None \
            else got.signature is None
        got.signature = want.signature
        assert got == want
        assert nbytes == len((want.content or "").encode("utf-8", "surrogatepass"))


def test_minhash_and_lsh_are_datasketchs():
    """dedup computes datasketch's MinHash (affine32, seed 1) and LSH (bands and rows from its
    `_optimal_param`) in numpy: the same signatures, parameters and near-duplicate decisions
    as datasketch itself, so today's datasets do not change."""
    import random

    import numpy as np

    datasketch = pytest.importorskip("datasketch")
    from datasketch.lsh import _optimal_param

    from codetune.data.dedup import NearDupIndex, lsh_params, minhash_signature, shingle_hashes

    for perms in (32, 128, 256):
        for t in (0.3, 0.5, 0.7, 0.8, 0.85, 0.9):
            assert lsh_params(t, perms) == _optimal_param(t, perms, 0.5, 0.5), (t, perms)

    rng = random.Random(0)
    base = [_module(i) * rng.randint(1, 3) for i in range(40)]
    texts = []
    for text in base:  # each text and a few near copies of it, some lines changed
        texts.append(text)
        for _ in range(rng.randint(0, 3)):
            lines = text.splitlines()
            for _ in range(rng.randint(1, 4)):
                lines[rng.randrange(len(lines))] = f"changed_{rng.random()}"
            texts.append("\n".join(lines))
    rng.shuffle(texts)

    def reference(text: str, perms: int):
        m = datasketch.MinHash(num_perm=perms, hashfunc=lambda h: h, scheme="affine32")
        m.update_batch(shingle_hashes(text, 5).tolist())
        return m

    for perms in (64, 128):
        for text in texts[:20]:
            assert np.array_equal(minhash_signature(text, 5, perms),
                                  np.asarray(reference(text, perms).hashvalues, np.uint32))

    for threshold in (0.5, 0.7, 0.85):
        ours = NearDupIndex(threshold, 128)
        theirs = datasketch.MinHashLSH(threshold=threshold, num_perm=128)
        sigs: dict[int, np.ndarray] = {}
        hits = 0
        for key, text in enumerate(texts):
            sig, m = minhash_signature(text), reference(text, 128)
            want = sorted(((k, float(np.mean(sigs[k] == sig))) for k in theirs.query(m)
                           if np.mean(sigs[k] == sig) >= threshold),
                          key=lambda kv: (-kv[1], kv[0]))
            assert ours.query(sig) == want
            hits += bool(want)
            if want and key % 3 == 0:  # leaks are removed from the index
                ours.remove(want[0][0])
                theirs.remove(want[0][0])
                del sigs[want[0][0]]
            elif not want or key % 2:
                ours.insert(key, sig)
                theirs.insert(key, m)
                sigs[key] = sig
        assert hits > 10, threshold


def test_resume_with_other_options_starts_afresh(corpus, tmp_path, monkeypatch):
    from codetune.data.scale import steps

    def broken(self, data=None, rank=0, world_size=1):
        raise RuntimeError("disk on fire")
        yield

    out = tmp_path / "ds"
    with monkeypatch.context() as m:
        m.setattr(steps.GlobalDedup, "run", broken)
        with pytest.raises(CodetuneError, match="final stage did not finish.*disk on fire"):
            prepare(corpus[1:3], out, prep_cfg(executor="local", workers=1), progress=False)
    assert not out.exists()
    assert (tmp_path / ".ds.partial-scale" / "state.json").is_file()
    # A different seed is a different dataset: the old plan is dropped, not reused.
    summary = prepare(corpus[1:3], out, prep_cfg(executor="local", workers=1, seed=9),
                      progress=False)
    assert store.load_manifest(out)["options"]["seed"] == 9 and sum(summary.kept.values())


def test_one_bad_file_is_recorded_and_the_job_goes_on(corpus, tmp_path, monkeypatch):
    from codetune.data import filters

    real = filters.FileFilter.check_text

    def check_text(self, path, lang, text, res):
        if path.endswith("mod_3.py"):
            raise MemoryError("simulated: this file broke the scanner")
        return real(self, path, lang, text, res)

    monkeypatch.setattr(filters.FileFilter, "check_text", check_text)
    out = tmp_path / "ds"
    prepare(corpus[1:2], out, prep_cfg(executor="local", workers=1), progress=False)
    with open(out / "dropped.jsonl", encoding="utf-8") as fh:
        errors = [d for d in map(json.loads, fh) if d["reason"] == "error"]
    assert [d["path"] for d in errors] == ["pkg/mod_3.py"]
    assert "MemoryError" in errors[0]["detail"]
    assert "| error | 1 |" in (out / "report.md").read_text()


def test_existing_output_guarded_as_today(corpus, tmp_path):
    out = tmp_path / "ds"
    prepare(corpus[1:2], out, prep_cfg(), progress=False)
    cfg = prep_cfg(executor="local", workers=1)
    with pytest.raises(CodetuneError, match="--overwrite"):
        prepare(corpus[1:2], out, cfg, progress=False)
    assert not (tmp_path / ".ds.partial-scale").exists()  # refused before any work
    prepare(corpus[1:3], out, cfg, overwrite=True, progress=False)
    assert {r["repo_id"] for r in _rows(out)} == {"svc_a", "svc_b"}


def test_slurm_writes_sbatch_scripts_in_a_dry_run(corpus, tmp_path):
    out = tmp_path / "ds"
    cfg = prep_cfg(executor="slurm", tasks=3, slurm_partition="cpu", slurm_time="02:00:00",
                   slurm_dry_run=True, slurm_sbatch_args={"account": "ml"},
                   slurm_env_command="source /shared/venv/bin/activate")
    summary = prepare(corpus[1:3], out, cfg, progress=False)
    assert not out.exists()  # nothing ran: the scripts are only written
    scripts = [Path(p).read_text() for p in summary.jobs]
    scan, final = scripts[0], next(s for s in scripts if "codetune-prepare-final" in s)
    work = tmp_path / ".ds.partial-scale"
    for line in ("#!/bin/bash", "#SBATCH --partition=cpu", "#SBATCH --time=02:00:00",
                 "#SBATCH --account=ml", "#SBATCH --job-name=codetune-prepare-scan",
                 "#SBATCH --array=0-2", "#SBATCH --cpus-per-task=1",
                 "source /shared/venv/bin/activate",
                 f"launch_pickled_pipeline {work}/logs/scan/executor.pik"):
        assert line in scan, line
    assert "#SBATCH --array=0-0" in final
    assert f"launch_pickled_pipeline {work}/logs/final/executor.pik" in final
    assert "# sbatch --dependency=afterok:DRYRUN0" in final  # final waits for the scan array
    assert (work / "logs" / "scan" / "executor.pik").is_file()
    assert json.loads((work / "state.json").read_text())["tasks"] == 3


def test_cli_slurm_without_sbatch_is_one_line(tmp_path, monkeypatch, capsys, corpus):
    from codetune.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    rc = main(["prepare", corpus[1], "-o", str(tmp_path / "ds"), "--executor", "slurm",
               "-s", "prepare.slurm_partition=cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "sbatch is not on PATH" in err
    assert not (tmp_path / "ds").exists()


def test_unreachable_ray_cluster_fails_fast(corpus, tmp_path):
    pytest.importorskip("ray")
    cfg = prep_cfg(executor="ray", ray_address="127.0.0.1:1", ray_connect_timeout=3)
    with pytest.raises(CodetuneError, match=r"Ray cluster at 127.0.0.1:1 cannot be reached"):
        prepare(corpus[1:2], tmp_path / "ds", cfg, progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("executor,missing", [("local", "datatrove"), ("ray", "ray")])
def test_missing_extra_names_it(corpus, tmp_path, monkeypatch, capsys, executor, missing):
    from codetune.cli import main

    monkeypatch.setitem(sys.modules, missing, None)  # `import ray` now raises ImportError
    rc = main(["prepare", corpus[1], "-o", str(tmp_path / "ds"), "--executor", executor])
    err = capsys.readouterr().err
    assert rc == 2 and 'pip install "codetune[scale]"' in err and missing in err


def test_cli_local_executor(corpus, tmp_path, capsys):
    from codetune.cli import main

    rc = main(["prepare", *corpus[1:3], "-o", str(tmp_path / "ds"), "--executor", "local",
               "--workers", "2", "--tasks", "2", "-s", "prepare.context_index=true"])
    assert rc == 0
    man = store.load_manifest(tmp_path / "ds")
    assert man["options"]["executor"] == "local" and man["context"]["path"]
    assert (tmp_path / "ds" / man["context"]["path"]).is_dir()
    assert "kept: train" in capsys.readouterr().out


def test_default_path_is_unchanged_without_executor(corpus, reference, tmp_path):
    out = tmp_path / "ds"
    prepare(corpus, out, dataclasses.replace(prep_cfg(**CFG), workers=2), progress=False)
    assert_same_dataset(out, reference)
