"""Run specs: YAML plus --set overrides, and the errors a user sees."""

from __future__ import annotations

import pytest

from genforge.core import ConfigError, load_spec
from genforge.core.config import parse_override
from genforge.core.testing.toy import ToyConfig


def test_overrides_read_the_same_for_every_section(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("generator: toy-gaussian\ntrain:\n  lr: 0.0005\nsample:\n  n: 10\n")
    cfg = load_spec(
        ToyConfig,
        spec,
        ["data.path=my.csv", "train.max_steps=200", "sample.n=1000", "data.dim=3", "train.max_minutes=null"],
    )
    assert cfg.data.path == "my.csv" and cfg.data.dim == 3
    assert cfg.train.max_steps == 200 and cfg.train.max_minutes is None
    assert cfg.train.lr == 0.0005
    assert cfg.sample.n == 1000


def test_unknown_field_names_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, None, ["train.max_step=10"])
    msg = str(err.value)
    assert "unknown field 'train.max_step'" in msg and "max_steps" in msg and "batch_size" in msg


def test_unknown_section_names_the_sections():
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, None, ["trian.lr=1"])
    assert "data, model, train, sample, evaluate" in str(err.value)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, None, ["train.optimizer=adamx"])
    msg = str(err.value)
    assert "train.optimizer" in msg and "'sgd'" in msg and "'adamw'" in msg and "adamx" in msg


def test_bad_type_names_the_field():
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, None, ["sample.n=many"])
    assert "sample.n" in str(err.value)


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("train.max_steps")
    with pytest.raises(ConfigError, match="dotted field name"):
        parse_override("train..lr=1")


def test_missing_or_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(ToyConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_spec(ToyConfig, bad)


def test_named_optimizers_and_phases_read_from_set():
    """A mapping of named sections takes any name, then that section's fields; wrong fields are named."""
    cfg = load_spec(
        ToyConfig, None, ["train.optimizers.critic.lr=1e-4", "train.optimizers.critic.networks=[critic]", "train.phases.critic.repeat=5"]
    )
    assert cfg.train.optimizers["critic"].lr == 1e-4 and cfg.train.optimizers["critic"].networks == ["critic"]
    assert cfg.train.phases["critic"].repeat == 5
    with pytest.raises(
        ConfigError, match="unknown field 'train.optimizers.critic.lrr'; train.optimizers.critic has: networks, optimizer, lr"
    ):
        load_spec(ToyConfig, None, ["train.optimizers.critic.lrr=1"])
    with pytest.raises(ConfigError, match="train.phases.critic.repeat"):
        load_spec(ToyConfig, None, ["train.phases.critic.repeat=0"])


def test_evaluator_settings_are_validated_per_evaluator():
    from genforge.core.config import spec_model
    from genforge.core.testing.toy import MomentsEvaluator

    model = spec_model(ToyConfig, [MomentsEvaluator()])
    assert load_spec(model, None, ["evaluate.moments.figure=false"]).evaluate.moments.figure is False
    assert load_spec(model, None, []).evaluate.moments.enabled is True
    with pytest.raises(ConfigError, match="unknown field 'evaluate.moment.figure'; evaluate has: moments"):
        load_spec(model, None, ["evaluate.moment.figure=false"])
    with pytest.raises(ConfigError, match="evaluate.moments.figure"):
        load_spec(model, None, ["evaluate.moments.figure=sometimes"])
