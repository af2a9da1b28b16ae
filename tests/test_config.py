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
    """YAML 1.1 reads `5e-4` as a string; the seed writes 5e-4. Overrides and YAML files both
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


def test_line_spans_are_document_level_only():
    assert config.load(None, ["fim.split=line"]).fim.split == "line"
    with pytest.raises(ConfigError, match="fim.split=line works at document level only"):
        config.load(None, ["fim.split=line", "fim.level=context"])
