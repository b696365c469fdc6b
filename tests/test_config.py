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


@pytest.mark.parametrize("field", ["train.seed", "sample.seed", "data.seed"])
def test_a_negative_seed_names_the_field(field):
    with pytest.raises(ConfigError, match=rf"{field}.*greater than or equal to 0"):
        load_spec(ToyConfig, None, [f"{field}=-1"])


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


# -- property: no input escapes as anything but ConfigError ------------------------------------------------------

import math  # noqa: E402 (the property tests' own imports, beside them)
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from genforge.core.config import spec_model  # noqa: E402
from genforge.core.testing.toy import MomentsEvaluator  # noqa: E402

EXAMPLES = int(os.environ.get("GENFORGE_HYPOTHESIS_EXAMPLES", "2000"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
MODEL = spec_model(ToyConfig, [MomentsEvaluator()])  # the toy's spec with an evaluate section: moments and timeout_minutes
FIELDS = [
    "train.max_steps", "train.lr", "train.betas", "train.optimizer", "train.max_minutes", "train.grad_clip", "train.seed",
    "train.optimizers.critic.lr", "train.optimizers.critic.networks", "train.phases.critic.repeat", "sample.n",
    "sample.batch_size", "data.path", "data.dim", "data.test_fraction", "data.max_rejected", "model", "evaluate.timeout_minutes",
    "evaluate.moments.enabled", "evaluate.moments.figure", "evaluate.moment.figure", "generator", "train", "data.",
]  # fmt: skip
TOKENS = [
    ":", ": ", "\n", "\n  ", "\n    ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!binary ", "!!set ", "!!timestamp ",
    "!!python/object:os.system ", "!!float ", "!!int ", "? ", "'", '"', "#", "|", ">", "---", "...", "%YAML 1.1\n", "null",
    "~", ".nan", "-.inf", "1e400", "0x1F", "0o17", "2020-13-45", "2024-01-01", "yes", "True", "1_000", "-1", "0", "3.5",
    "adamw", "sgd", "\t", "\x00", "\u2028", "é", "=", "<<: ", *[f.rsplit(".", 1)[-1] for f in FIELDS], *FIELDS,
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["adamw", "sgd", "cosine", "cuda", "auto", "1e-3", "[1, 2]", "{a: 1}", ""])
)
plausible = st.sampled_from([1, 2, 5, 200, 0.5, 0.001, 1e-4, True, False, None, "adamw", "sgd", "cosine", "cpu", [0.9, 0.99], ["critic"]])
values = plausible | st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6
)
printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=4)
yamlish = st.lists(st.sampled_from(TOKENS) | printable | st.text(max_size=4), max_size=30).map("".join)


def _tree(pairs: list[tuple[str, object]]) -> dict:
    tree: dict = {}
    for path, value in pairs:
        node = tree
        parts = [p for p in path.split(".") if p]
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
        if parts:
            node[parts[-1]] = value
    return tree


def _at(config, path: list[str]):
    node = config.model_dump(mode="python")
    for part in path:
        node = node[part]
    return node


def _same(asked, got) -> bool:
    """Whether the config holds what was asked; where pydantic converts a value (text to a number, a list to a tuple), as it converts it."""
    if isinstance(asked, dict) and isinstance(got, dict):
        return all(k in got and _same(v, got[k]) for k, v in asked.items())
    if isinstance(asked, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(asked) == len(got) and all(_same(a, b) for a, b in zip(asked, got))
    if isinstance(asked, str) != isinstance(got, str) or isinstance(asked, bool) != isinstance(got, bool):
        return True  # converted by the field's type ("5" -> 5, 1 -> True): pydantic's rule, not the loader's
    if isinstance(asked, float) and isinstance(got, float) and math.isnan(asked):
        return math.isnan(got)
    return asked == got


@pytest.fixture(scope="module")
def spec_file():
    folder = Path(tempfile.mkdtemp(prefix="genforge-property-"))
    yield folder / "spec.yaml"


positive = st.floats(1e-6, 1e6, allow_nan=False)
TYPED = {  # fields and values of their type: the inputs that must come back as asked
    "train.max_steps": st.integers(1, 10**9) | st.none(),
    "train.lr": positive,
    "train.betas": st.tuples(st.floats(0, 1), st.floats(0, 1)).map(list),
    "train.optimizer": st.sampled_from(["sgd", "adam", "adamw"]),
    "train.max_minutes": positive | st.none(),
    "train.seed": st.integers(-(2**31), 2**31),
    "train.optimizers.critic.lr": positive,
    "train.phases.critic.repeat": st.integers(1, 100),
    "sample.n": st.integers(1, 10**6),
    "data.path": st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30) | st.none(),
    "data.dim": st.integers(1, 64),
    "evaluate.timeout_minutes": positive,
    "evaluate.moments.figure": st.booleans(),
}
typed = st.sampled_from(sorted(TYPED)).flatmap(lambda f: st.tuples(st.just(f), TYPED[f]))
configs = st.lists(typed | typed | typed | st.tuples(st.sampled_from(FIELDS), plausible | values), max_size=4).map(
    lambda pairs: yaml.safe_dump(_tree(pairs), allow_unicode=True)
)
overrides = typed.map(lambda fv: (fv[0], yaml.safe_dump(fv[1], default_flow_style=True).removesuffix("\n...\n").strip()))


@PROPERTY
@given(text=st.one_of(yamlish, st.text(max_size=80), configs, configs))
def test_no_config_file_escapes_as_anything_but_a_config_error(spec_file, text):
    """Random YAML-ish text as a config file: a ConfigError of one line, or a config holding what the file asked.

    2,000 examples by default (a few seconds); set GENFORGE_HYPOTHESIS_EXAMPLES=100000 for a longer run.
    """
    spec_file.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        config = load_spec(MODEL, spec_file)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)[:300]
        return
    asked = yaml.safe_load(text) or {}
    asked.pop("generator", None)
    assert _same(asked, config.model_dump(mode="python"))


@PROPERTY
@given(
    pair=overrides
    | st.tuples(
        st.sampled_from(FIELDS) | st.text(max_size=12),
        st.one_of(yamlish, st.text(max_size=20), (plausible | values).map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())),
    ),
    sep=st.sampled_from(["=", "=", "=", "", " = ", "=="]),
)
def test_no_set_override_escapes_as_anything_but_a_config_error(pair, sep):
    """Random ``key=value`` text for --set: a ConfigError of one line, or a config whose field holds the value asked.

    2,000 examples by default (a few seconds); set GENFORGE_HYPOTHESIS_EXAMPLES=100000 for a longer run.
    """
    key, value = pair
    text = f"{key}{sep}{value}"
    try:
        config = load_spec(MODEL, None, [text])
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)[:300]
        return
    path, asked = parse_override(text)
    assert _same(asked, _at(config, path)), (text, asked, _at(config, path))
