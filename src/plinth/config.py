"""Settings, read once from environment variables (``PLINTH_*``) and an optional TOML file.

Precedence: explicit arguments, then environment, then the config file
(``$PLINTH_CONFIG`` or ``$PLINTH_HOME/config.toml``), then defaults.
"""

from __future__ import annotations

import getpass
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from plinth.errors import InvalidArgument

# Spark masters Plinth starts sessions on: local mode in this process (all cores, N cores,
# N cores with F retries per task) or a standalone cluster (several masters under ZooKeeper
# are listed with commas).
_SPARK_MASTER = re.compile(
    r"local(\[([1-9][0-9]*|\*)(,[1-9][0-9]*)?\])?"
    r"|spark://[^\s/:,]+:[0-9]+(,[^\s/:,]+:[0-9]+)*"
)


def check_spark_master(master: str) -> str:
    """``master`` if Plinth can start a Spark session on it; else ValueError saying why."""
    if _SPARK_MASTER.fullmatch(master) is None:
        raise ValueError(
            f"{master!r} is not a Spark master Plinth can use: give local[*] (every core of "
            "this machine), local[N] (N cores) or spark://host:port (a standalone cluster)"
        )
    return master


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLINTH_", extra="forbid")

    home: Path = Field(default=Path(".plinth"), description="folder of the embedded default")
    store_uri: str | None = Field(default=None, description="metadata store (SQLAlchemy URL)")
    artifact_uri: str | None = Field(default=None, description="artifact root (fsspec URI)")
    uri: str | None = Field(default=None, description="a Plinth server to talk to instead")
    online_uri: str | None = Field(default=None, description="online feature store (sqlite/redis)")
    host: str = "127.0.0.1"
    port: int = Field(default=5151, ge=1, le=65535)
    # Metric buffering: the background flusher writes at least this often.
    flush_interval: float = Field(default=1.0, gt=0)
    flush_max_points: int = Field(default=50_000, gt=0)
    heartbeat_interval: float = Field(default=10.0, gt=0)
    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # The A/B controller (canary steps, bandit re-allocation, auto-stop) in ``plinth server``.
    abtest_controller_seconds: float = Field(
        default=10.0, ge=0, description="A/B controller pass every N seconds in the server (0: off)"
    )
    # The monitor scheduler (due and event-triggered monitors, webhook retries) in the server.
    monitor_loop_seconds: float = Field(
        default=30.0,
        ge=0,
        description="monitor scheduler pass every N seconds in the server (0: off)",
    )
    # A dependency that accepts connections but never answers fails a call after these
    # (PostgreSQL's connect timeout has a floor of 2 s); 0 turns a statement's limit off.
    store_connect_timeout: float = Field(default=5.0, ge=2, description="PostgreSQL connect")
    store_statement_timeout: float = Field(default=60.0, ge=0, description="PostgreSQL statement")
    online_timeout: float = Field(default=2.0, gt=0, description="Redis connect and read")
    # -- users, tokens, permissions (see the README's "Running a shared server") --
    token: str | None = Field(default=None, description="API token a client sends", repr=False)
    auth: bool = Field(default=False, description="the server requires a token on every call")
    private_by_default: bool = Field(
        default=False, description="new resources are private to their creator's groups"
    )
    oidc_jwks: str | None = Field(default=None, description="identity provider's JWKS file/URL")
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_admin_groups: list[str] = Field(default_factory=list)
    oidc_editor_groups: list[str] = Field(default_factory=list)
    # -- the dashboard --
    session_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="a dashboard sign-in lasts this long"
    )
    cookie_secure: bool = Field(
        default=False,
        description="mark cookies Secure over plain HTTP too (behind a TLS-terminating proxy)",
    )
    # The store's policy on pickled model packages (pyfunc models, packages saved before
    # safe formats): unpickling runs code from whoever registered the package, so loading
    # one is refused unless this, or the caller's trust_pickle=True / --trust-pickle, allows it.
    trust_pickle: bool = Field(default=False, description="load pickled model packages")
    # Batch jobs on Spark (engine="spark": training data, scoring, pipelines' steps).
    spark_master: str = Field(
        default="local[*]",
        description="Spark master for batch jobs: local[*], local[N] or spark://host:port",
    )

    @field_validator("store_uri", "artifact_uri", "uri", "online_uri", "token", "oidc_jwks")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("spark_master")
    @classmethod
    def _a_spark_master(cls, value: str) -> str:
        return check_spark_master(value.strip())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file belongs to the home these settings are for: the one given as an
        # argument, else $PLINTH_HOME's.
        home = getattr(init_settings, "init_kwargs", {}).get("home")
        return (init_settings, env_settings, _TomlSource(settings_cls, home))

    @property
    def resolved_store_uri(self) -> str:
        return self.store_uri or f"sqlite:///{(self.home / 'plinth.db').resolve()}"

    @property
    def resolved_online_uri(self) -> str:
        return self.online_uri or f"sqlite:///{(self.home / 'online.db').resolve()}"

    @property
    def store_timeouts(self) -> dict[str, float]:
        """The metadata store's timeouts, as ``Store`` and ``open_store`` take them."""
        return {
            "connect_timeout": self.store_connect_timeout,
            "statement_timeout": self.store_statement_timeout,
        }

    @property
    def resolved_artifact_uri(self) -> str:
        return self.artifact_uri or str((self.home / "artifacts").resolve())


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], home: Path | str | None) -> None:
        super().__init__(settings_cls)
        self._home = home

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        explicit = os.environ.get("PLINTH_CONFIG")
        home = Path(self._home or os.environ.get("PLINTH_HOME", ".plinth"))
        path = Path(explicit) if explicit else home / "config.toml"
        if not path.is_file():
            if explicit:
                raise InvalidArgument(f"PLINTH_CONFIG names {path}, which is not a file")
            return {}
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"config file {path} is not valid TOML: {exc}") from None
        return dict(data.get("plinth", data))


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidArgument(f"invalid Plinth settings: {problems}") from None


def local_user() -> str:
    """The operating system's user name: the actor recorded for changes made here."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
