"""Loading dataclass configs from YAML: unknown keys, wrong types, nesting, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orderpolicy.config import ConfigError, from_dict, load_config, parse_override, save_config
from orderpolicy.mdm.training import MDMTrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'stpes'.*did you mean 'steps'\?"):
        from_dict(MDMTrainConfig, {"stpes": 10})


def test_unknown_key_without_close_match_lists_keys():
    with pytest.raises(ConfigError) as error:
        from_dict(MDMTrainConfig, {"zzzzzz": 1})
    message = str(error.value)
    assert "did you mean" not in message
    assert "'steps'" in message


def test_unknown_nested_key_names_full_path():
    with pytest.raises(ConfigError, match=r"unknown config key 'task\.max_vaule'.*did you mean 'task\.max_value'\?"):
        from_dict(MDMTrainConfig, {"task": {"max_vaule": 10}})


def test_nested_key_sets_value():
    config = from_dict(MDMTrainConfig, {"task": {"max_value": 25, "operations": ["+"]}, "model": {"num_layers": 2}})
    assert config.task.max_value == 25
    assert config.task.operations == ["+"]
    assert config.task.max_ops == MDMTrainConfig().task.max_ops
    assert config.model.num_layers == 2


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"steps": "100"}, "steps"),
        ({"steps": 4.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"lr": "fast"}, "lr"),
        ({"lr": False}, "lr"),
        ({"autocast": 16}, "autocast"),
        ({"task": {"max_value": "40"}}, "task.max_value"),
        ({"task": {"operations": "+"}}, "task.operations"),
        ({"task": 5}, "task"),
    ],
)
def test_wrong_type_rejected(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_dict(MDMTrainConfig, data)


def test_int_accepted_for_float():
    config = from_dict(MDMTrainConfig, {"lr": 1})
    assert config.lr == 1.0
    assert isinstance(config.lr, float)


def test_invalid_value_reported_as_config_error():
    with pytest.raises(ConfigError, match="autocast"):
        from_dict(MDMTrainConfig, {"autocast": "fp8"})
    with pytest.raises(ConfigError, match="min_ops"):
        from_dict(MDMTrainConfig, {"task": {"min_ops": 5, "max_ops": 2}})


def test_overrides_apply_dotted_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 10\ntask:\n  max_value: 20\n")
    overrides = dict(parse_override(text) for text in ["task.max_ops=3", "lr=0.01", "steps=12"])
    config = load_config(MDMTrainConfig, path, overrides)
    assert config.steps == 12
    assert config.lr == 0.01
    assert config.task.max_value == 20
    assert config.task.max_ops == 3


def test_override_without_equals_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.steps")


def test_missing_file_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(MDMTrainConfig, tmp_path / "missing.yaml")


def test_non_mapping_file_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(MDMTrainConfig, path)


def test_save_and_load_round_trip(tmp_path):
    config = from_dict(MDMTrainConfig, {"steps": 7, "task": {"operations": ["+", "*"]}})
    path = tmp_path / "resolved.yaml"
    save_config(config, path)
    assert load_config(MDMTrainConfig, path) == config
    assert yaml.safe_load(path.read_text())["task"]["operations"] == ["+", "*"]


def test_shipped_mdm_config_loads():
    config = load_config(MDMTrainConfig, CONFIG_DIR / "mdm.yaml")
    assert isinstance(config, MDMTrainConfig)


def test_shipped_policy_configs_load():
    """Every policy-training YAML in configs/ loads into PolicyRunConfig."""
    from pathlib import Path

    from orderpolicy.training.policy_trainer import PolicyRunConfig

    for name in ("policy.yaml", "llada_gsm8k.yaml", "dream_gsm8k.yaml"):
        config = load_config(PolicyRunConfig, Path(__file__).resolve().parents[1] / "configs" / name)
        assert config.train.target_mean_steps > 0
