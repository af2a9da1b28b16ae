"""The typed config: YAML + overrides, and errors that name the field and the fix."""

from __future__ import annotations

import pytest

from codetune import config
from codetune.errors import ConfigError


def test_defaults_follow_starcoder_pipeline():
    cfg = config.load()
    p = cfg.prepare
    assert (p.max_file_bytes, p.max_line_length, p.max_mean_line_length) == (1_000_000, 1000, 100)
    assert p.min_alphanum_fraction == 0.25 and p.near_dup_threshold == 0.7
    assert p.near_dup_ngram == 5 and p.secrets == "redact" and p.valid_fraction == 0.05


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("prepare:\n  valid_fraction: 0.1\n  exclude: ['*.md']\n  seed: 7\n")
    cfg = config.load(f, ["prepare.seed=9", "prepare.include=[src/*, lib/*]",
                          "prepare.secrets=off", "prepare.languages={.mojo: Mojo}"])
    p = cfg.prepare
    assert p.valid_fraction == 0.1 and p.exclude == ["*.md"] and p.seed == 9
    assert p.include == ["src/*", "lib/*"]
    assert p.secrets == "off"  # YAML would read `off` as false; a choice stays a choice
    assert p.languages == {".mojo": "Mojo"}


def test_string_fields_take_text_verbatim():
    cfg = config.load(None, ["prepare.secret_placeholder=[REDACTED]", "prepare.text_column=123"])
    assert cfg.prepare.secret_placeholder == "[REDACTED]"
    assert cfg.prepare.text_column == "123"


def test_optional_field_accepts_null():
    assert config.load(None, ["prepare.hub_data_dir=data"]).prepare.hub_data_dir == "data"
    assert config.load(None, ["prepare.hub_data_dir=null"]).prepare.hub_data_dir is None


@pytest.mark.parametrize("override, match", [
    ("prepare.valid_fractoin=0.1", r"unknown config key 'prepare.valid_fractoin'.*did you mean "
                                   r"'prepare.valid_fraction'"),
    ("prepair.seed=1", r"unknown config key 'prepair'.*did you mean 'prepare'"),
    ("prepare.seed=abc", r"prepare.seed must be a whole number"),
    ("prepare.seed=true", r"prepare.seed must be a whole number"),
    ("prepare.valid_fraction=lots", r"prepare.valid_fraction must be a number"),
    ("prepare.valid_fraction=0.9", r"prepare.valid_fraction must be in \[0.0, 0.5\]"),
    ("prepare.secrets=maybe", r"prepare.secrets must be one of redact, drop-file, off"),
    ("prepare.dedup_near=yes please", r"prepare.dedup_near must be true or false"),
    ("prepare.exclude={a: b}", r"prepare.exclude must be a list"),
    ("prepare", r"not of the form section.key=value"),
    ("prepare=1", r"prepare is a section"),
    ("prepare.workers=-1", r"prepare.workers must be 0"),
    ("prepare.near_dup_threshold=0", r"prepare.near_dup_threshold must be in \(0.0, 1.0\]"),
])
def test_bad_values_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        config.load(None, [override])


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        config.load(bad)
    bad.write_text("prepare:\n  max_file_bytes: big\n")
    with pytest.raises(ConfigError, match="prepare.max_file_bytes must be a whole number"):
        config.load(bad)
    bad.write_text("prepare: 3\n")
    with pytest.raises(ConfigError, match="prepare is a section"):
        config.load(bad)


def test_dump_round_trips(tmp_path):
    cfg = config.load(None, ["prepare.seed=5", "prepare.exclude=[a, b]", "prepare.secrets=off"])
    config.dump(cfg, tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml") == cfg


def test_describe_lists_every_key_with_help():
    text = config.describe()
    for key in ("valid_fraction", "near_dup_threshold", "secrets", "languages"):
        assert f"  {key}:" in text
    assert "held out for validation" in text


@pytest.mark.parametrize("text, value", [("5e-4", 5e-4), ("1E-5", 1e-5), (".5", 0.5),
                                         ("2e-3", 2e-3), ("0.0005", 5e-4), ("3", 3.0),
                                         ("1_000.5", 1000.5)])
def test_floats_in_every_form_python_takes(text, value, tmp_path):
    """YAML 1.1 reads `5e-4` as a string; the reference notebook writes 5e-4. Overrides and YAML files both
    take whatever float() takes."""
    assert config.load(None, [f"train.learning_rate={text}"]).train.learning_rate == value
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train:\n  learning_rate: {text}\n")
    assert config.load(recipe).train.learning_rate == value


def test_whole_numbers_in_float_form_and_bad_numbers(tmp_path):
    assert config.load(None, ["train.max_steps=1e3"]).train.max_steps == 1000
    for bad in ("train.max_steps=1.5", "train.learning_rate=fast", "train.learning_rate=nan",
                "train.learning_rate=inf"):
        with pytest.raises(ConfigError, match="train."):
            config.load(None, [bad])


def test_renamed_values_are_still_read():
    """data.packing=seed was renamed to concat (it says what it does); old configs still load."""
    assert config.load(None, ["data.packing=seed"]).data.packing == "concat"
    assert config.load(None, ["data.packing=concat"]).data.packing == "concat"


def test_renamed_keys_are_still_read_with_a_warning_naming_the_new_one(tmp_path, capsys,
                                                                        monkeypatch):
    """eval.context_tokens (the in-file prompt budget) is now eval.prompt_tokens: "context" is
    repository context. An old config keeps its meaning, never becoming a repository budget."""
    monkeypatch.setattr(config, "_warned", set())
    f = tmp_path / "old.yaml"
    f.write_text("eval:\n  context_tokens: 1000\n  max_tasks: 5\n")
    cfg = config.load(f).eval
    assert (cfg.prompt_tokens, cfg.repo_context_tokens, cfg.max_tasks) == (1000, 512, 5)
    err = capsys.readouterr().err
    assert "eval.context_tokens" in err and "eval.prompt_tokens" in err and str(f) in err
    assert "eval.repo_context_tokens" in err  # where the repository budget went
    over = config.load(None, ["eval.context_tokens=900"]).eval
    assert (over.prompt_tokens, over.repo_context_tokens) == (900, 512)
    assert capsys.readouterr().err == ""  # once a process
    assert config.load(f, ["eval.prompt_tokens=700"]).eval.prompt_tokens == 700
    f.write_text("eval:\n  context_tokens: 1000\n  prompt_tokens: 800\n")
    with pytest.raises(ConfigError, match="both eval.context_tokens and eval.prompt_tokens"):
        config.load(f)
    dumped = tmp_path / "new.yaml"
    config.dump(config.load(None, ["eval.prompt_tokens=640"]), dumped)
    assert "context_tokens: 640" not in dumped.read_text()
    monkeypatch.setattr(config, "_warned", set())
    assert config.load(dumped).eval.prompt_tokens == 640 and capsys.readouterr().err == ""


def test_line_spans_are_document_level_only():
    assert config.load(None, ["fim.split=line"]).fim.split == "line"
    with pytest.raises(ConfigError, match="fim.split=line works at document level only"):
        config.load(None, ["fim.split=line", "fim.level=context"])


# --------------------------------------------------------------------------- every problem at once


@pytest.mark.parametrize("seed", range(5))
def test_every_bad_value_is_reported_at_once(seed):
    """Three mistakes cost one run to fix, not three: one error names each key and its fix."""
    import random

    rng = random.Random(seed)
    steps, batch = -rng.randint(0, 10**6), -rng.randint(1, 10**6)
    rate = round(rng.uniform(1.01, 100), 3)
    bad = [f"train.max_steps={steps}", f"train.batch_size={batch}", f"fim.rate={rate}"]
    rng.shuffle(bad)
    with pytest.raises(ConfigError) as e:
        config.load(None, bad)
    text = str(e.value)
    assert text.startswith("3 problems in the config:")
    assert f"train.max_steps must be at least 1, got {steps}" in text
    assert f"train.batch_size must be at least 1, got {batch}" in text
    assert f"fim.rate must be in [0.0, 1.0], got {float(rate)}" in text
    assert len(e.value.problems) == 3
    # the good overrides among them still count: only the bad ones are listed
    with pytest.raises(ConfigError) as e:
        config.load(None, [*bad, "train.grad_accum=2"])
    assert len(e.value.problems) == 3


def test_unknown_keys_are_listed_together_each_with_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.load(None, ["train.max_stpes=5", "fim.rat=0.1", "prepair.seed=1",
                           "train.batch_size=abc"])
    problems = e.value.problems
    assert len(problems) == 4 and str(e.value).startswith("4 problems")
    assert "did you mean 'train.max_steps'" in problems[0]
    assert "did you mean 'fim.rate'" in problems[1]
    assert "did you mean 'prepare'" in problems[2]
    assert "train.batch_size must be a whole number" in problems[3]
    # a YAML file's mistakes, the overrides' and the ranges', in one error
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  max_stpes: 5\n  learning_rate: -1\nserve:\n  prot: 80\n")
    with pytest.raises(ConfigError) as e:
        config.load(f, ["generation.top_p=0"])
    text = str(e.value)
    for part in ("did you mean 'train.max_steps'", "did you mean 'serve.port'",
                 "train.learning_rate must be positive", "generation.top_p (--top-p) must be "
                 "in (0, 1]"):
        assert part in text
    assert len(e.value.problems) == 4


def test_one_problem_reads_as_before():
    with pytest.raises(ConfigError) as e:
        config.load(None, ["train.max_steps=0"])
    assert str(e.value) == "train.max_steps must be at least 1, got 0"


# --------------------------------------------------------------------------- serve and generation


def test_serve_and_generation_are_config_sections(capsys):
    from codetune.cli import main
    from codetune.infer import GenParams
    from codetune.serve import ServeSettings

    assert ServeSettings is config.ServeConfig and GenParams is config.GenerationConfig
    assert main(["config", "-s", "serve.port=9001", "-s", "generation.top_k=7"]) == 0
    out = capsys.readouterr().out
    assert "\nserve:  # " in out and "\ngeneration:  # " in out
    assert "  port: 9001  # (int)" in out and "  top_k: 7  # (int)" in out
    for key in ("host", "api_key", "slots", "queue", "max_tokens", "request_timeout",
                "max_new_tokens", "temperature", "top_p", "greedy", "stop"):
        assert f"\n  {key}: " in out
    cfg = config.load(None, ["generation.stop=[END, '#']", "serve.slots=4"])
    assert cfg.generation.stop == ["END", "#"] and cfg.serve.slots == 4


@pytest.mark.parametrize("override, match", [
    ("serve.port=70000", r"--port 70000 is not a TCP port"),
    ("serve.queue=-1", r"serve.queue \(--queue\) must be 0 or more"),
    ("generation.temperature=-0.5", r"generation.temperature \(--temperature\) must be 0"),
    ("generation.max_new_tokens=0", r"generation.max_new_tokens \(--max-new-tokens\)"),
])
def test_serve_and_generation_values_are_checked(override, match):
    with pytest.raises(ConfigError, match=match):
        config.load(None, [override])
    assert config.load(None, ["serve.host=0.0.0.0", "serve.api_key=k"]).serve.api_key == "k"


def test_a_serve_section_never_stops_train_nor_leaks_its_key(tmp_path):
    """The exposure rule belongs to a starting server, and the key to its environment: a
    recipe with `serve.host: 0.0.0.0` loads, and a dumped config holds no key."""
    import secrets as pysecrets

    key = pysecrets.token_urlsafe(24)
    cfg = config.load(None, ["serve.host=0.0.0.0"])
    with pytest.raises(ConfigError, match="without an API key"):
        cfg.serve.check_exposure()
    cfg = config.load(None, ["serve.host=0.0.0.0", f"serve.api_key={key}"])
    config.dump(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert key not in text and config.load(tmp_path / "config.yaml").serve.api_key is None
