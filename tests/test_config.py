from __future__ import annotations

from pathlib import Path

import pytest

from plinth import InvalidArgument
from plinth.config import Settings, load_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("PLINTH_HOME", str(path))
    return path


def test_defaults_put_the_store_and_artifacts_under_home(home: Path) -> None:
    settings = load_settings()
    assert settings.home == home
    assert settings.store_uri is None and settings.artifact_uri is None and settings.uri is None
    assert settings.resolved_store_uri == f"sqlite:///{home.resolve() / 'plinth.db'}"
    assert settings.resolved_artifact_uri == str(home.resolve() / "artifacts")
    assert (settings.host, settings.port) == ("127.0.0.1", 5151)


def test_a_relative_home_resolves_to_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLINTH_HOME")
    settings = load_settings()
    assert settings.home == Path(".plinth")
    assert (
        settings.resolved_store_uri == f"sqlite:///{tmp_path.resolve() / '.plinth' / 'plinth.db'}"
    )
    assert settings.resolved_artifact_uri == str(tmp_path.resolve() / ".plinth" / "artifacts")


def test_explicit_uris_are_used_as_given(home: Path) -> None:
    settings = load_settings(
        store_uri="postgresql+psycopg://db/plinth", artifact_uri="s3://bucket/root"
    )
    assert settings.resolved_store_uri == "postgresql+psycopg://db/plinth"
    assert settings.resolved_artifact_uri == "s3://bucket/root"


def test_settings_come_from_environment_variables(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLINTH_STORE_URI", "sqlite:////data/plinth.db")
    monkeypatch.setenv("PLINTH_ARTIFACT_URI", "s3://bucket/artifacts")
    monkeypatch.setenv("PLINTH_URI", "http://plinth.internal:5151")
    monkeypatch.setenv("PLINTH_PORT", "6000")
    monkeypatch.setenv("PLINTH_FLUSH_INTERVAL", "0.25")
    monkeypatch.setenv("PLINTH_MAX_REQUEST_BYTES", "1000")
    settings = load_settings()
    assert settings.resolved_store_uri == "sqlite:////data/plinth.db"
    assert settings.resolved_artifact_uri == "s3://bucket/artifacts"
    assert settings.uri == "http://plinth.internal:5151"
    assert (settings.port, settings.flush_interval, settings.max_request_bytes) == (
        6000,
        0.25,
        1000,
    )


def test_a_blank_environment_variable_means_unset(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLINTH_URI", "")
    monkeypatch.setenv("PLINTH_STORE_URI", "")
    settings = load_settings()
    assert settings.uri is None
    assert settings.resolved_store_uri == f"sqlite:///{home.resolve() / 'plinth.db'}"


@pytest.mark.parametrize("with_table", [True, False], ids=["plinth-table", "top-level"])
def test_settings_come_from_config_toml_in_home(home: Path, with_table: bool) -> None:
    body = 'port = 7000\nartifact_uri = "s3://from-file"\nflush_interval = 2.5\n'
    (home / "config.toml").write_text(("[plinth]\n" if with_table else "") + body)
    settings = load_settings()
    assert (settings.port, settings.artifact_uri, settings.flush_interval) == (
        7000,
        "s3://from-file",
        2.5,
    )


def test_plinth_config_names_the_file_instead_of_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "config.toml").write_text("port = 7000\n")
    elsewhere = tmp_path / "team.toml"
    elsewhere.write_text("[plinth]\nport = 8000\nhost = '0.0.0.0'\n")
    monkeypatch.setenv("PLINTH_CONFIG", str(elsewhere))
    settings = load_settings()
    assert (settings.port, settings.host) == (8000, "0.0.0.0")


def test_precedence_is_explicit_then_environment_then_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "config.toml").write_text("port = 7000\nhost = 'file-host'\nflush_interval = 3.0\n")
    monkeypatch.setenv("PLINTH_PORT", "6000")
    monkeypatch.setenv("PLINTH_HOST", "env-host")
    settings = load_settings(port=5000)
    assert settings.port == 5000  # explicit beats environment and file
    assert settings.host == "env-host"  # environment beats file
    assert settings.flush_interval == 3.0  # file beats default
    assert settings.heartbeat_interval == Settings.model_fields["heartbeat_interval"].default


def test_plinth_config_naming_a_missing_file_is_an_invalid_argument(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("PLINTH_CONFIG", str(missing))
    with pytest.raises(InvalidArgument, match="PLINTH_CONFIG") as raised:
        load_settings()
    assert str(missing) in raised.value.message


def test_a_missing_config_toml_in_home_is_fine(home: Path) -> None:
    assert not (home / "config.toml").exists()
    assert load_settings().port == 5151


def test_a_config_file_that_is_not_toml_is_an_invalid_argument(home: Path) -> None:
    (home / "config.toml").write_text("port = = 1\n")
    with pytest.raises(InvalidArgument, match="not valid TOML") as raised:
        load_settings()
    assert str(home / "config.toml") in raised.value.message


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"flush_max_points": -1}, "flush_max_points"),
        ({"heartbeat_interval": -1.0}, "heartbeat_interval"),
        ({"max_request_bytes": 0}, "max_request_bytes"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_explicit_value_names_the_field(
    home: Path, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument, match="invalid Plinth settings") as raised:
        load_settings(**overrides)
    assert field in raised.value.message


def test_an_invalid_environment_value_names_the_field(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLINTH_PORT", "not-a-port")
    with pytest.raises(InvalidArgument, match="port"):
        load_settings()


@pytest.mark.parametrize(
    ("content", "field"),
    [("flush_interval = 'soon'\n", "flush_interval"), ("prot = 80\n", "prot")],
    ids=["wrong-type", "unknown-key"],
)
def test_an_invalid_file_value_names_the_field(home: Path, content: str, field: str) -> None:
    (home / "config.toml").write_text(content)
    with pytest.raises(InvalidArgument) as raised:
        load_settings()
    assert field in raised.value.message


def test_an_explicit_home_reads_its_own_config_file(home: Path, tmp_path: Path) -> None:
    (home / "config.toml").write_text("[plinth]\nport = 6001\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text("[plinth]\nport = 6002\nflush_interval = 3.5\n")
    settings = load_settings(home=other)
    assert (settings.port, settings.flush_interval) == (6002, 3.5)
    assert load_settings().port == 6001  # $PLINTH_HOME's file, as before
    assert load_settings(home=tmp_path / "empty").port == 5151  # no file there: defaults
