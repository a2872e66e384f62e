"""One Settings object, read once from flags and FIELDSYNC_* env vars and passed down, so no module reads the environment behind the operator's back."""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    database_direct_url: str | None = Field(None, description="Direct PostgreSQL DSN (not through pgbouncer) for session-scoped work: the live LISTEN connection, upload write leases, migrations and CLI commands. Defaults to database_url.")
    database_pgbouncer: bool = Field(False, description="database_url points at pgbouncer in transaction pooling mode: no prepared-statement cache, no session startup parameters.")
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server binds (0 picks a free one).")
    public_url: str | None = Field(None, description="URL devices use to reach this server (defaults to http://host:port).")
    log_format: LogFormat | None = Field(None, description="console or json; defaults to console on a TTY, json otherwise.")
    log_level: str = Field("info", description="Minimum log level.")
    access_log_sample: int = Field(100, ge=1, description="Successful device sync requests (POST /v1/sync/...) answered within 250 ms get an `http.request` log line one time in this many (the line says sampled=N); every other request, every error and every slow answer is always logged. 1 logs every request. Prometheus counts every request either way.")
    pg_bin_dir: Path | None = Field(None, description="Directory with initdb/pg_ctl/postgres; found via pg_config when unset.")
    pool_min_size: int | None = Field(None, ge=1, description="Connections the asyncpg pool opens before the server reports ready and keeps open while idle; unset: pool_max_size, so a burst of requests never waits for PostgreSQL to start backends (each new connection costs ~10-30 ms of fork, authentication and cold catalogue caches). Small values suit many short-lived servers (the test suite uses 1).")
    pool_max_size: int = Field(20, ge=1, description="Maximum connections in the asyncpg pool.")
    db_queue_limit: int = Field(2000, ge=1, description="Requests that may wait for their first pool connection at once; one more is refused with 503 service_unavailable and Retry-After (the client backs off) instead of joining a backlog it would time out in. Requests already served once, and the server's own loops, are never refused and go first. A safety valve, not a throttle: every refusal is a request the client sends again, so the default is far above the fleet benchmark's worst backlog (~650).")
    db_queue_timeout_s: float = Field(25.0, gt=0, description="A request that waited this long for its first pool connection is refused with 503 service_unavailable and Retry-After: just short of a phone's usual 30-s request timeout, past which the client has given up while the server would still do the work.")
    push_batch_max: int = Field(8, ge=1, le=64, description="Concurrent pushes of different devices one process applies in one transaction at most (two statements for all of them, engine/push_batch); a push arriving while the process is idle goes alone at once. 1: every push in its own transaction.")
    cursor_secret: SecretStr | None = Field(None, description="HMAC key for sync cursors; generated into the data dir when unset.")
    max_push_bytes: int = Field(1 << 20, ge=1024, description="Largest accepted push body in bytes.")
    max_body_bytes: int = Field(256 << 10, ge=1024, description="Largest accepted body for other JSON/msgpack endpoints.")
    header_timeout_s: float = Field(20.0, gt=0, description="A connection must send a complete request head within this many seconds of opening (or of its previous answer); idle keep-alive connections close after the same time.")
    body_timeout_s: float = Field(120.0, gt=0, description="A JSON/msgpack request body must arrive whole within this many seconds, else 408 request_timeout (tus PATCH uses upload_read_timeout_seconds).")
    retention_days: float = Field(7.0, gt=0, description="How long change-log history and removal tombstones are kept; older cursors get a fresh snapshot.")
    prune_interval_s: float = Field(3600.0, gt=0, description="Seconds between background retention prunes (each process tries; one runs).")
    prune_batch_rows: int = Field(5000, ge=100, le=100_000, description="Rows one retention DELETE removes at most; each batch is its own short transaction, so a backlog never holds locks or WAL for long.")
    results_keep_per_device: int = Field(1000, ge=0, description="Stored push results older than 4 x retention_days are pruned, but never a device's latest this many (a replay of a recent seq always gets its stored answer; at least one whole push of 500).")
    blob_gc_interval_s: float = Field(86400.0, gt=0, description="Seconds between photo collections (one process of the deployment runs each): unattached photos and bytes without a row are deleted.")
    unattached_photo_days: float = Field(30.0, gt=0, description="A verified photo that no ticket shows and no upload names is deleted this long after it was verified (its device had that long to push the attach).")
    blob_orphan_grace_hours: float = Field(24.0, gt=0, description="Photo-store objects without a database row (an upload whose commit failed, a crash) and stored partial pieces of ended uploads are deleted once this old.")
    demo_data: bool | None = Field(None, description="Seed demo departments, crews, devices and tickets into an empty database; unset: only on the embedded default, never on a database URL unless `--demo`.")
    demo_tickets: int = Field(2000, ge=0, description="Number of open demo tickets to seed.")
    demo_seed: int = Field(20200101, description="Random seed for the demo data generator.")
    max_photo_bytes: int = Field(25 << 20, ge=1024, description="Largest accepted photo upload in bytes (tus Tus-Max-Size).")
    max_photo_pixels: int = Field(50_000_000, ge=1, description="Largest accepted photo in pixels (width x height); larger images are refused as decompression bombs.")
    max_uploads_per_device: int = Field(4, ge=1, description="Concurrent unfinished upload sessions one device may hold; more answer 429 with Retry-After.")
    upload_expiry_seconds: int = Field(24 * 3600, ge=60, description="An upload session idle this long expires and its partial bytes are deleted.")
    upload_read_timeout_seconds: float = Field(30.0, gt=0, description="A PATCH whose body stalls this long is cut off (bytes received so far are kept).")
    upload_partials: Literal["local", "store"] = Field("local", description="Where unfinished tus uploads live between PATCHes: local (data_dir/uploads, one host) or store (each acknowledged byte range as an object in the photo store, so an upload started on one host resumes on any other; use with blob_backend s3 behind a load balancer).")
    blob_backend: Literal["fs", "s3"] = Field("fs", description="Photo store: fs (under the data dir) or s3 (S3-compatible object storage).")
    s3_bucket: str | None = Field(None, description="S3 bucket for photos when blob_backend is s3.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint URL (e.g. MinIO); unset means AWS.")
    s3_region: str | None = Field(None, description="S3 region name.")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 access key id; unset uses the default AWS credential chain.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key; unset uses the default AWS credential chain.")
    s3_prefix: str = Field("photos/", description="Key prefix for photo objects inside the S3 bucket.")
    live_queue_size: int = Field(256, ge=8, description="Frames queued per live socket; a consumer further behind is closed with 4008 and resumes from its position.")
    live_heartbeat_s: float = Field(20.0, gt=0, description="Seconds between WebSocket pings on /v1/live; a peer that misses the pong is dropped.")
    live_auth_timeout_s: float = Field(5.0, gt=0, description="A live socket without a token in its upgrade must send its hello within this many seconds.")
    live_revoke_check_s: float = Field(2.0, gt=0, description="Seconds between checks that close live sockets of revoked devices and users.")
    live_poll_s: float = Field(2.0, gt=0, description="The live feed re-reads the change log at least this often even without a NOTIFY.")
    live_lag_timeout_s: float = Field(10.0, gt=0, description="A supervisor socket whose queue stays full this long is closed with 4008 (bursts are caught up from the log, not dropped).")
    city_timezone: str = Field("America/Los_Angeles", description="IANA time zone the console shows times in.")
    map_tile_url: str | None = Field(None, description="Optional map tile URL template ({z}/{x}/{y}) for the console board; unset draws points only (offline).")
    session_idle_minutes: int = Field(30, ge=1, description="A console session unused this long expires.")
    session_max_hours: int = Field(12, ge=1, description="A console session expires this long after sign-in, however active.")
    login_backoff_s: float = Field(2.0, gt=0, le=300, description="After 3 failed console sign-ins (per account and per address), the wait before the next attempt; doubles with each further failure, capped at 300 s.")
    open311_jurisdiction_id: str | None = Field(None, description="Open311 jurisdiction_id this server answers for; requests naming another get 404.")
    open311_jurisdiction_required: bool = Field(False, description="Refuse Open311 calls without jurisdiction_id (400), for servers shared by several jurisdictions.")
    open311_sr_format: str = Field("{year}-{seq:07d}", description="Format of service request numbers created by Open311 POST: Python format fields {seq} (a database sequence) and {year}.")
    open311_contact: str = Field("311 service desk", description="Contact text of the Open311 discovery document.")
    open311_key_service: str = Field("Ask the city's 311 team for an API key.", description="How citizen-app developers get an Open311 API key (discovery document).")

    def pool_floor(self) -> int:
        """Connections opened at start and kept while idle: pool_min_size, by default the whole pool (never above it)."""
        return min(self.pool_min_size or self.pool_max_size, self.pool_max_size)

    def wants_demo(self) -> bool:
        """Demo data is for trying FieldSync on a laptop: on by default only for the embedded cluster, so pointing
        a fresh production database at the server never fills it with a fake city (opt in with --demo)."""
        return self.demo_data if self.demo_data is not None else self.database_url is None

    device_token_grace_s: float = Field(7 * 86400.0, gt=0, description="After POST /v1/devices/self/rotate the token used to ask stays valid this long, so a lost answer never locks a device out.")
    rate_limit_device_per_minute: int = Field(600, ge=0, description="Requests one device may make per minute (all processes together, counted in PostgreSQL, where each process leases a tenth at a time); more answer 429 + Retry-After. 0 disables.")
    rate_limit_address_per_minute: int = Field(1200, ge=0, description="Requests one client address may make per minute (before authentication, so token guessing is bounded too). 0 disables.")
    rate_limit_loopback: bool = Field(False, description="Also rate-limit requests from loopback addresses (off: local tools, tests and a same-host proxy without trusted forwarding are never limited).")
    rate_limit_trust_forwarded: bool = Field(False, description="Take the client address from the last X-Forwarded-For entry (set only behind a proxy such as HAProxy that sets it).")
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus metrics listener (GET /metrics); keep it off the public network.")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="Port of the metrics listener; 0 or empty disables it. Workers share it (SO_REUSEPORT).")
    metrics_stale_device_hours: float = Field(12.0, gt=0, description="fieldsync_devices_stale counts devices not seen for longer than this.")

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port_disables(cls, value: object) -> object:
        """FIELDSYNC_METRICS_PORT= (empty) means off, like 0."""
        return None if value == "" else value

    @field_validator("open311_sr_format")
    @classmethod
    def _sr_format_numbers_uniquely(cls, value: str) -> str:
        """A format without {seq} would give every new request the same number; refuse it at start-up."""
        try:
            a, b = value.format(seq=1, year=2026), value.format(seq=2, year=2026)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{seq}} and {{year}} may appear: {exc}") from None
        if a == b or not 1 <= len(a) <= 64:
            raise ValueError("must contain {seq} and give numbers of 1 to 64 characters")
        return value

    def resolved_cursor_secret(self) -> bytes:
        """Cursors must survive restarts and be shared by every worker, so the generated key is persisted."""
        if self.cursor_secret is not None:
            return self.cursor_secret.get_secret_value().encode()
        return read_or_create_secret(self.data_dir / "cursor-secret")


def read_or_create_secret(path: Path) -> bytes:
    """The secret stored at `path`, created on first use so that concurrent first starts (N workers, several
    commands) all end up with the same bytes: the key is written completely to a private temp file, then linked into
    place with os.link, which never replaces an existing file; whoever loses the race reads the winner's key."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, secrets.token_urlsafe(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; its complete key is what everyone uses
    finally:
        os.unlink(tmp)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    """A stored key; an empty file (e.g. truncated by hand) is an error, never a silently weak key."""
    value = path.read_bytes().strip()
    if not value:
        raise ValueError(f"{path} is empty: delete it to generate a new secret")
    return value
