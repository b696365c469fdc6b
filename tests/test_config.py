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


def test_a_billion_laughs_config_is_refused_in_one_line_naming_the_file(tmp_path):
    """Nested aliases expand on every print: a config may not use anchors or aliases at all (a 1 KB file, gigabytes expanded)."""
    bomb = tmp_path / "laughs.yaml"
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]  # 10^6 "lol" once expanded
    bomb.write_text("\n".join(levels) + "\ntrain:\n  betas: *a5\n")
    assert bomb.stat().st_size < 1024
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, bomb)
    msg = str(err.value)
    assert len(msg) < 400 and "\n" not in msg, msg[:500]
    assert msg.startswith(
        f"config file {str(bomb)!r} is not a spec genforge reads: YAML anchors and aliases (&name, *name) are not accepted"
    )
    run_spec = tmp_path / "run"
    run_spec.mkdir()
    (run_spec / "spec.yaml").write_text("generator: toy-gaussian\n" + "\n".join(levels) + "\n")
    from genforge.core import DataError, Run

    with pytest.raises(DataError, match=r"spec.yaml is damaged \(YAML anchors and aliases"):
        _ = Run(run_spec).spec


def test_an_error_quotes_at_most_200_characters_of_a_value(tmp_path):
    huge = "x" * 100_000
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, None, [f"sample.n={huge}"])
    assert "sample.n" in str(err.value) and len(str(err.value)) < 400 and "…" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, None, [f"train.{huge}=1"])
    assert len(str(err.value)) < 1200 and "…" in str(err.value)
    many = tmp_path / "many.yaml"
    many.write_text("train:\n  betas: [" + ", ".join(["oops"] * 50_000) + "]\n")
    with pytest.raises(ConfigError) as err:
        load_spec(ToyConfig, many)
    assert "train.betas" in str(err.value) and len(str(err.value)) < 1500
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested deeper than 32 levels"):
        load_spec(ToyConfig, deep)
    assert parse_override("data.path=*.csv") == (["data", "path"], "*.csv")  # not an alias: the text as given
