"""Configuration files: which are read, how they merge, and every error
naming its file, line and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tests.config_fixtures import MyApp, write
from typing_extensions import TypedDict  # pydantic's requirement before Python 3.12

from beamish import config
from beamish.config import ConfigError


def test_files_merge_deeply_in_order_config_env_runtime(tmp_path: Path) -> None:
    write(
        tmp_path,
        "config.toml",
        "[my_app]\nmax_retries = 3\ntimeout = 5.0\npool_size = 10\n\n[my_app.Worker]\nbatch_size = 100\ninterval = 1.0\n",
    )
    write(tmp_path, "dev.toml", "[my_app]\ndebug = true\nlog_level = 'debug'\n")
    write(tmp_path, "prod.toml", "[my_app]\ndebug = false\nlog_level = 'info'\n[my_app.Worker]\nbatch_size = 500\n")
    write(tmp_path, "runtime.toml", "[my_app]\npool_size = 20\n")
    dev = config.load(tmp_path, env="dev")
    assert dev.sections == {
        "my_app": {
            "max_retries": 3,
            "timeout": 5.0,
            "pool_size": 20,
            "Worker": {"batch_size": 100, "interval": 1.0},
            "debug": True,
            "log_level": "debug",
        }
    }
    prod = config.load(tmp_path, env="prod")
    assert prod.sections["my_app"]["Worker"] == {"batch_size": 500, "interval": 1.0}
    assert prod.sections["my_app"]["log_level"] == "info"
    assert prod.files == (tmp_path / "config.toml", tmp_path / "prod.toml", tmp_path / "runtime.toml")
    assert prod.where(("my_app", "Worker", "batch_size")) == (tmp_path / "prod.toml", 5)
    assert prod.where(("my_app", "Worker", "interval")) == (tmp_path / "config.toml", 8)
    assert prod.where(("my_app", "pool_size")) == (tmp_path / "runtime.toml", 2)


def test_the_environment_comes_from_BEAMISH_ENV_default_dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "dev.toml", "[a]\nenv = 'dev'\n")
    write(tmp_path, "test.toml", "[a]\nenv = 'test'\n")
    monkeypatch.delenv("BEAMISH_ENV", raising=False)
    assert config.env() == "dev"
    assert config.load(tmp_path).sections == {"a": {"env": "dev"}}
    monkeypatch.setenv("BEAMISH_ENV", "test")
    assert config.load(tmp_path).sections == {"a": {"env": "test"}}
    monkeypatch.setenv("BEAMISH_ENV", "../etc")
    with pytest.raises(ConfigError, match="BEAMISH_ENV"):
        config.env()


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "config.toml", "[my_app]\npool_size = 10\ntimeout = \n")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path, env="dev")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.key) == (path, 3, "syntax")
    assert f"{path}:3: syntax:" in str(info.value)


def test_a_top_level_value_must_be_a_table(tmp_path: Path) -> None:
    write(tmp_path, "config.toml", "pool_size = 10\n")
    with pytest.raises(ConfigError, match=r"config.toml:1: pool_size: expected a table"):
        config.load(tmp_path, env="dev")


def test_environment_variables_fill_in_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "runtime.toml", "[db]\nurl = '${DB_URL}'\npool = '${DB_POOL:-5}'\nliteral = 'a ${DB_URL} b'\n")
    monkeypatch.setenv("DB_URL", "postgres://x")
    monkeypatch.delenv("DB_POOL", raising=False)
    assert config.load(tmp_path, env="dev").sections["db"] == {
        "url": "postgres://x",
        "pool": "5",
        "literal": "a ${DB_URL} b",
    }
    monkeypatch.delenv("DB_URL")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path, env="dev")
    assert str(info.value.problems[0]) == f"{tmp_path / 'runtime.toml'}:2: db.url: environment variable DB_URL is not set"


def test_a_missing_directory_is_an_error_and_no_directory_is_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration directory"):
        config.load(tmp_path / "nope")
    assert config.load(None, env="dev").sections == {}


def test_validation_reports_file_line_key_and_expected_type(tmp_path: Path) -> None:
    write(tmp_path, "config.toml", "[my_app]\npool_size = 10\n\n[my_app.Worker]\nbatch_size = 100\n")
    write(tmp_path, "prod.toml", "[my_app]\ndebug = 'yes please'\npoolsize = 3\n\n[my_app.Worker]\ninterval = 'soon'\n")
    cfg = config.load(tmp_path, env="prod")
    with pytest.raises(ConfigError) as info:
        config.validate(cfg, "my_app", MyApp, cfg.sections["my_app"])
    prod = tmp_path / "prod.toml"
    assert [(p.file, p.line, p.key) for p in info.value.problems] == [
        (prod, 2, "my_app.debug"),
        (prod, 3, "my_app.poolsize"),
        (prod, 6, "my_app.Worker.interval"),
    ]
    messages = [p.message for p in info.value.problems]
    assert messages[0].startswith("expected bool, got 'yes please'")
    assert messages[1] == "unknown key"
    assert messages[2].startswith("expected float, got 'soon'")


def test_validation_returns_plain_values_with_defaults(tmp_path: Path) -> None:
    write(tmp_path, "config.toml", "[my_app]\npool_size = '12'\n[my_app.Worker]\nbatch_size = 1\n")
    cfg = config.load(tmp_path, env="dev")
    assert config.validate(cfg, "my_app", MyApp, cfg.sections["my_app"]) == {
        "pool_size": 12,
        "debug": False,
        "Worker": {"batch_size": 1, "interval": 1.0},
    }


def test_a_missing_required_key_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "config.toml", "[my_app]\npool_size = 1\n")
    cfg = config.load(tmp_path, env="dev")
    with pytest.raises(ConfigError) as info:
        config.validate(cfg, "my_app", MyApp, cfg.sections["my_app"])
    (problem,) = info.value.problems
    assert problem.key == "my_app.Worker"
    assert problem.message == "required key missing (expected Worker)"


@dataclasses.dataclass
class Endpoint:
    port: int
    host: str = "127.0.0.1"


class Limits(TypedDict):
    rate: float


def test_dataclasses_and_typeddicts_are_schemas_too(tmp_path: Path) -> None:
    write(tmp_path, "config.toml", "[web]\nport = 'eighty'\nhots = 'x'\n[limits]\nrate = 2\n")
    cfg = config.load(tmp_path, env="dev")
    with pytest.raises(ConfigError) as info:
        config.validate(cfg, "web", Endpoint, cfg.sections["web"])
    assert [(p.line, p.key, p.message.split(",")[0]) for p in info.value.problems] == [
        (2, "web.port", "expected int"),
        (3, "web.hots", "unknown key"),
    ]
    assert config.validate(cfg, "limits", Limits, cfg.sections["limits"]) == {"rate": 2.0}
