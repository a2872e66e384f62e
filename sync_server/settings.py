"""One Settings object, read once from flags and FIELDSYNC_* env vars and passed down, so no module reads the environment behind the operator's back."""

from __future__ import annotations

import secrets
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class LogFormat(StrEnum):
    """Readable console for people at a terminal, JSON lines for log shippers."""

    CONSOLE = "console"
    JSON = "json"


class Settings(BaseSettings):
    """Every knob an operator can turn; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="FIELDSYNC_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path(".fieldsync"), description="Embedded cluster, secrets, photos and demo credentials live here.")
    database_url: str | None = Field(None, description="External PostgreSQL DSN; when unset a private embedded cluster is used.")
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server binds (0 picks a free one).")
    public_url: str | None = Field(None, description="URL devices use to reach this server (defaults to http://host:port).")
    log_format: LogFormat | None = Field(None, description="console or json; defaults to console on a TTY, json otherwise.")
    log_level: str = Field("info", description="Minimum log level.")
    pg_bin_dir: Path | None = Field(None, description="Directory with initdb/pg_ctl/postgres; found via pg_config when unset.")
    pool_min_size: int = Field(2, ge=1, description="Minimum connections in the asyncpg pool.")
    pool_max_size: int = Field(20, ge=1, description="Maximum connections in the asyncpg pool.")
    cursor_secret: SecretStr | None = Field(None, description="HMAC key for sync cursors; generated into the data dir when unset.")
    max_push_bytes: int = Field(1 << 20, ge=1024, description="Largest accepted push body in bytes.")
    max_body_bytes: int = Field(256 << 10, ge=1024, description="Largest accepted body for other JSON/msgpack endpoints.")
    retention_days: float = Field(7.0, gt=0, description="How long change-log history and removal tombstones are kept; older cursors get a fresh snapshot.")
    demo_data: bool = Field(True, description="Seed demo departments, crews, devices and tickets into an empty database.")
    demo_tickets: int = Field(2000, ge=0, description="Number of open demo tickets to seed.")
    demo_seed: int = Field(20200101, description="Random seed for the demo data generator.")

    def resolved_cursor_secret(self) -> bytes:
        """Cursors must survive restarts and be shared by every worker, so the generated key is persisted."""
        if self.cursor_secret is not None:
            return self.cursor_secret.get_secret_value().encode()
        path = self.data_dir / "cursor-secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()
