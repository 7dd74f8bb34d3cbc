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
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REDIS_CONFIG_FILE = PROJECT_ROOT / "Redis" / "redis_config.py"
MIB = 1024 * 1024


def _env(*names: str) -> Any:
    """Accept the field's own name (explicit values) and its environment variable name(s)."""
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Everything MCS can be configured with. Field docs are the configuration table of the README."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # Redis: broker, result backend and task metadata.
    redis_host: str = Field("127.0.0.1", validation_alias=_env("redis_host", "REDIS_HOST"))
    redis_port: int = Field(6379, ge=1, le=65535, validation_alias=_env("redis_port", "REDIS_PORT"))
    redis_password: SecretStr | None = Field(None, validation_alias=_env("redis_password", "REDIS_PASSWORD"))
    redis_broker_db: int = Field(0, ge=0, validation_alias=_env("redis_broker_db", "REDIS_BROKER_DB"))
    redis_backend_db: int = Field(1, ge=0, validation_alias=_env("redis_backend_db", "REDIS_BACKEND_DB"))
    metadata_db: int = Field(0, ge=0, validation_alias=_env("metadata_db", "MCS_METADATA_DB"))
    metadata_prefix: str = Field(
        "mcs:", pattern=r"^[A-Za-z0-9_:.-]{1,32}$", validation_alias=_env("metadata_prefix", "MCS_METADATA_PREFIX")
    )
    redis_socket_timeout_s: float = Field(
        5.0, gt=0, validation_alias=_env("redis_socket_timeout_s", "MCS_REDIS_SOCKET_TIMEOUT_S")
    )

    log_level: str = Field(
        "INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", validation_alias=_env("log_level", "MCS_LOG_LEVEL")
    )

    # Celery.
    deploy_queue: str = Field(
        "deploy", pattern=r"^[a-z][a-z0-9_]{0,62}$", validation_alias=_env("deploy_queue", "MCS_DEPLOY_QUEUE")
    )
    result_expires_s: int = Field(3600, gt=0, validation_alias=_env("result_expires_s", "MCS_RESULT_EXPIRES_S"))
    task_soft_time_limit_s: int = Field(
        300, gt=0, validation_alias=_env("task_soft_time_limit_s", "MCS_TASK_SOFT_TIME_LIMIT_S")
    )
    task_time_limit_s: int = Field(600, gt=0, validation_alias=_env("task_time_limit_s", "MCS_TASK_TIME_LIMIT_S"))
    trigger_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("trigger_timeout_s", "MCS_TRIGGER_TIMEOUT_S"))
    max_payload_bytes: int = Field(1 * MIB, gt=0, validation_alias=_env("max_payload_bytes", "MCS_MAX_PAYLOAD_BYTES"))

    # Deploy.
    worker_base_image: str = Field(
        "mcs-base:bookworm-py311", validation_alias=_env("worker_base_image", "MCS_WORKER_BASE_IMAGE")
    )
    generated_tasks_dir: Path = Field(
        PROJECT_ROOT / "generated_tasks", validation_alias=_env("generated_tasks_dir", "MCS_GENERATED_TASKS_DIR")
    )
    deployments_dir: Path = Field(
        PROJECT_ROOT / "deployments", validation_alias=_env("deployments_dir", "MCS_DEPLOYMENTS_DIR")
    )
    state_dir: Path = Field(
        PROJECT_ROOT / ".mcs",
        description="local state of make up/demo: embedded Redis data, pid files, logs",
        validation_alias=_env("state_dir", "MCS_STATE_DIR"),
    )
    deploy_timeout_s: float = Field(600.0, gt=0, validation_alias=_env("deploy_timeout_s", "MCS_DEPLOY_TIMEOUT_S"))
    deploy_roots: list[Path] | None = Field(
        None,
        description="folders deploy_task may read task folders from (JSON list); default: generated_tasks_dir",
        validation_alias=_env("deploy_roots", "MCS_DEPLOY_ROOTS"),
    )
    deploy_secret: SecretStr | None = Field(
        None,
        description="HMAC key that signs deploy messages; created on first use in deploy_secret_file when unset",
        validation_alias=_env("deploy_secret", "MCS_DEPLOY_SECRET"),
    )
    deploy_secret_file: Path = Field(
        Path.home() / ".config" / "mcs" / "deploy_secret",
        validation_alias=_env("deploy_secret_file", "MCS_DEPLOY_SECRET_FILE"),
    )
    max_bundle_bytes: int = Field(8 * MIB, gt=0, validation_alias=_env("max_bundle_bytes", "MCS_MAX_BUNDLE_BYTES"))
    max_file_bytes: int = Field(2 * MIB, gt=0, validation_alias=_env("max_file_bytes", "MCS_MAX_FILE_BYTES"))
    max_files: int = Field(200, gt=0, validation_alias=_env("max_files", "MCS_MAX_FILES"))
    allow_custom_dockerfile: bool = Field(
        False, validation_alias=_env("allow_custom_dockerfile", "MCS_ALLOW_CUSTOM_DOCKERFILE")
    )
    keep_versions: int = Field(2, ge=1, validation_alias=_env("keep_versions", "MCS_KEEP_VERSIONS"))
    health_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("health_timeout_s", "MCS_HEALTH_TIMEOUT_S"))
    deploy_lock_ttl_s: int = Field(900, gt=0, validation_alias=_env("deploy_lock_ttl_s", "MCS_DEPLOY_LOCK_TTL_S"))

    # Worker containers: limits (per-task values may ask for less, never more) and network.
    worker_runtime: str = Field(
        "auto", pattern=r"^(auto|docker|process)$", validation_alias=_env("worker_runtime", "MCS_WORKER_RUNTIME")
    )
    worker_mem_limit_mb: int = Field(
        256, ge=32, validation_alias=_env("worker_mem_limit_mb", "MCS_WORKER_MEM_LIMIT_MB")
    )
    worker_cpus: float = Field(1.0, gt=0, le=64, validation_alias=_env("worker_cpus", "MCS_WORKER_CPUS"))
    worker_pids_limit: int = Field(128, ge=16, validation_alias=_env("worker_pids_limit", "MCS_WORKER_PIDS_LIMIT"))
    worker_labels: dict[str, str] = Field(
        default_factory=dict,
        description="extra labels for worker images and containers (JSON object), e.g. to find a test's containers",
        validation_alias=_env("worker_labels", "MCS_WORKER_LABELS"),
    )
    worker_network: str = Field(
        "host",
        description="Docker network of worker containers: host (reaches a loopback Redis), none, or a network name",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        validation_alias=_env("worker_network", "MCS_WORKER_NETWORK"),
    )

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
        return (init_settings, env_settings, dotenv_settings, RedisConfigFileSource(settings_cls))


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
        import os

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
        from mcs.errors import InvalidInput

        raise InvalidInput("redis_config", str(path), "get_redis_config() must return a dict")
    return config


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once at start; pass the object down instead of reading globals."""
    import os

    env_file = os.environ.get("MCS_ENV_FILE")
    if env_file and "_env_file" not in overrides:
        overrides["_env_file"] = env_file
    return Settings(**overrides)
