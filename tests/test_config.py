"""Run specs: YAML plus --set overrides, and the errors a user sees."""

from __future__ import annotations

import pytest

from genforge.core import ConfigError, load_spec
from genforge.core.config import parse_override
from genforge.plugins.healthcare.generator import MoleculeDiffusionConfig


def test_overrides_read_the_same_for_every_section(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("generator: molecule-diffusion\ntrain:\n  lr: 0.0005\nsample:\n  n: 10\n")
    cfg = load_spec(
        MoleculeDiffusionConfig, spec,
        ["data.path=my.smi", "train.max_steps=200", "sample.n=1000", "model.n_layers=2", "train.max_minutes=null"],
    )
    assert cfg.data.path == "my.smi"
    assert cfg.train.max_steps == 200 and cfg.train.max_minutes is None
    assert cfg.train.lr == 0.0005
    assert cfg.sample.n == 1000
    assert cfg.model.n_layers == 2


def test_unknown_field_names_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        load_spec(MoleculeDiffusionConfig, None, ["train.max_step=10"])
    msg = str(err.value)
    assert "unknown field 'train.max_step'" in msg and "max_steps" in msg and "batch_size" in msg


def test_unknown_section_names_the_sections():
    with pytest.raises(ConfigError) as err:
        load_spec(MoleculeDiffusionConfig, None, ["trian.lr=1"])
    assert "data, model, train, sample, evaluate" in str(err.value)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_spec(MoleculeDiffusionConfig, None, ["train.optimizer=adamx"])
    msg = str(err.value)
    assert "train.optimizer" in msg and "'sgd'" in msg and "'adamw'" in msg and "adamx" in msg


def test_bad_type_names_the_field():
    with pytest.raises(ConfigError) as err:
        load_spec(MoleculeDiffusionConfig, None, ["sample.n=many"])
    assert "sample.n" in str(err.value)


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("train.max_steps")
    with pytest.raises(ConfigError, match="dotted field name"):
        parse_override("train..lr=1")


def test_missing_or_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(MoleculeDiffusionConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_spec(MoleculeDiffusionConfig, bad)
