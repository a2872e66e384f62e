"""A private PostgreSQL cluster under the data dir, so `fieldsync serve` works on a fresh machine with no database to set up."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import structlog

log = structlog.get_logger(__name__)

SUPERUSER = "fieldsync"
DATABASE = "fieldsync"
# sun_path holds 108 bytes with its terminating NUL; PostgreSQL refuses to start when no socket fits, so a data dir
# nested deeper than this serves TCP only.
_SUN_PATH_MAX = 107
_FALLBACK_ROOT = Path("/var/lib/fieldsync/clusters")


class EmbeddedPostgresError(RuntimeError):
    """Raised with a one-line, actionable message when the private cluster cannot be provided."""


def find_bin_dir(explicit: Path | None = None) -> Path:
    """Locate initdb/pg_ctl so the operator never has to put PostgreSQL on PATH by hand."""
    candidates: list[Path] = []
    if explicit is not None:
        # An operator who names a directory means that one: silently running another version would surprise them.
        if not all((Path(explicit) / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            raise EmbeddedPostgresError(f"no initdb/pg_ctl/postgres in {explicit} (FIELDSYNC_PG_BIN_DIR): fix the path or unset it")
        candidates.append(Path(explicit))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for cand in candidates:
        if (cand / "initdb").is_file() and (cand / "pg_ctl").is_file() and (cand / "postgres").is_file():
            return cand
    raise EmbeddedPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: apt-get install postgresql) "
        "or pass --database-url / FIELDSYNC_DATABASE_URL to use an existing server."
    )


def _version_key(path: str) -> tuple[int, ...]:
    """Prefer the newest installed major version."""
    parts = Path(path).parent.name.split(".")
    return tuple(int(p) for p in parts if p.isdigit())


def _free_port() -> int:
    """Ask the kernel for an unused loopback port; the brief race is handled by retrying start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _RunAs:
    """Who owns and runs the cluster: ourselves, or an unprivileged user when we are root."""

    uid: int
    gid: int
    name: str

    @classmethod
    def detect(cls) -> _RunAs:
        """PostgreSQL refuses to run as root, so root hands the cluster to `postgres` (or `nobody`)."""
        if os.geteuid() != 0:
            return cls(os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name)
        for name in ("postgres", "nobody"):
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(pw.pw_uid, pw.pw_gid, name)
        raise EmbeddedPostgresError("running as root and no unprivileged 'postgres' user exists: create one or run as a normal user")

    @property
    def is_self(self) -> bool:
        """True when no privilege drop is needed."""
        return self.uid == os.geteuid()

    def preexec(self) -> None:
        """Drop to the cluster owner in the child before exec."""
        if not self.is_self:
            os.setgid(self.gid)
            os.setgroups([])
            os.setuid(self.uid)

    def can_reach(self, path: Path) -> bool:
        """Whether the cluster owner can traverse every ancestor of `path` (a 0700 /root or tmp dir blocks it)."""
        if self.is_self:
            return True
        for parent in reversed(path.resolve().parents):
            st = parent.stat()
            if st.st_uid == self.uid:
                mode_ok = st.st_mode & 0o100
            elif st.st_gid == self.gid:
                mode_ok = st.st_mode & 0o010
            else:
                mode_ok = st.st_mode & 0o001
            if not mode_ok:
                return False
        return True


@dataclass
class EmbeddedPostgres:
    """Lifecycle of the private cluster: init on first start, reuse afterwards, stop only what we started."""

    data_dir: Path
    bin_dir: Path | None = None
    port: int | None = None
    extra_options: tuple[str, ...] = ()  # more `-c name=value` settings (the benchmark loads pg_stat_statements)
    _run_as: _RunAs = field(init=False)
    _started_here: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.bin_dir = find_bin_dir(self.bin_dir)
        self._run_as = _RunAs.detect()

    @property
    def pg_dir(self) -> Path:
        """The cluster directory, `<data-dir>/pg` (possibly a symlink, see `_prepare_dir`)."""
        return self.data_dir / "pg"

    @property
    def _password_file(self) -> Path:
        return self.data_dir / "pg-password"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "pg-port"

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster owner, with a scrubbed locale so initdb never trips on LANG."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PG"))}
        env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8")
        try:
            return subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, env=env,
                preexec_fn=None if self._run_as.is_self else self._run_as.preexec, cwd="/",
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedPostgresError(f"{Path(args[0]).name} did not finish within {timeout:.0f}s") from exc

    def _chown(self, path: Path) -> None:
        if not self._run_as.is_self:
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _prepare_dir(self) -> Path:
        """Create the cluster dir; as root, if the unprivileged owner cannot reach the data dir, keep the cluster in /var/lib and link it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        target = self.pg_dir
        if target.is_symlink() or target.exists():
            return target.resolve()
        if self._run_as.can_reach(self.data_dir):
            target.mkdir(mode=0o700)
            self._chown(target)
            return target
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        real = _FALLBACK_ROOT / digest
        _FALLBACK_ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(_FALLBACK_ROOT.parent, 0o755)
        os.chmod(_FALLBACK_ROOT, 0o755)
        real.mkdir(mode=0o700, exist_ok=True)
        self._chown(real)
        target.symlink_to(real)
        log.info("embedded_pg.relocated", reason="data dir not reachable by cluster owner", cluster=str(real), user=self._run_as.name)
        return real

    def _initdb(self, real: Path) -> None:
        password = secrets.token_urlsafe(24)
        # The owner must read it, and a root-owned data dir may be out of its reach, hence /tmp for that case.
        pwfile = self.data_dir / ".pwfile" if self._run_as.is_self else Path(f"/tmp/fieldsync-pw-{secrets.token_hex(8)}")
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            res = self._run([
                self._bin("initdb"), "-D", str(real), "-U", SUPERUSER, "--pwfile", str(pwfile),
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
        self._password_file.write_text(password)
        self._password_file.chmod(0o600)
        log.info("embedded_pg.initialised", cluster=str(real), user=self._run_as.name)

    def _running_port(self, real: Path) -> int | None:
        """Port of a live postmaster on this cluster, or None; a stale postmaster.pid from a crash is removed."""
        pidfile = real / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            return None
        try:
            pid = int(lines[0])
            port = int(lines[3])
        except (IndexError, ValueError):
            pidfile.unlink(missing_ok=True)
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            cmdline = []
        if cmdline and Path(cmdline[0].decode(errors="replace")).name in ("postgres", "postmaster") and str(real).encode() in b" ".join(cmdline):
            return port
        log.warning("embedded_pg.stale_pidfile_removed", pid=pid)
        pidfile.unlink(missing_ok=True)
        return None

    def start(self) -> str:
        """Start (or join) the cluster and return a DSN for the application database."""
        real = self._prepare_dir()
        if not (real / "PG_VERSION").exists():
            self._initdb(real)
        port = self._running_port(real)
        if port is not None:
            log.info("embedded_pg.reused_running", port=port)
        else:
            port = self._start_postmaster(real)
            self._started_here = True
        self.port = port
        self._port_file.write_text(str(port))
        self._ensure_database()
        return self.dsn()

    def _start_postmaster(self, real: Path) -> int:
        last_err = ""
        for attempt in range(3):
            port = self.port if (self.port and attempt == 0) else _free_port()
            # The Unix socket (mode 0700: only the owner and root) is what the server uses; loopback TCP stays for psql
            # and pgbouncer. A directory too deep for a socket path gets no socket rather than no start.
            sock = f"-k {real}" if _socket_fits(real, port) else "-c unix_socket_directories=''"
            opts = f"-p {port} -c listen_addresses=127.0.0.1 {sock} -c unix_socket_permissions=0700 -c max_connections=300 -c shared_buffers=128MB -c fsync=on"
            opts += "".join(f" -c {o}" for o in self.extra_options)
            res = self._run([self._bin("pg_ctl"), "start", "-D", str(real), "-w", "-t", "60", "-l", str(real / "server.log"), "-o", opts])
            if res.returncode == 0:
                log.info("embedded_pg.started", port=port, cluster=str(real))
                return port
            last_err = _tail(real / "server.log") or res.stderr.strip()
        raise EmbeddedPostgresError(f"PostgreSQL did not start: {last_err}")

    def _ensure_database(self) -> None:
        """Create the application database once; `postgres` stays untouched for maintenance."""
        res = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if res.stdout.strip() != "1":
            res = self._psql("postgres", f"CREATE DATABASE {DATABASE}")
            if res.returncode != 0:
                raise EmbeddedPostgresError(f"could not create database: {res.stderr.strip()}")

    def _psql(self, db: str, sql: str) -> subprocess.CompletedProcess[str]:
        env_pw = self._password_file.read_text().strip()
        args = [self._bin("psql"), "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", db, "-c", sql]
        env = dict(os.environ, PGPASSWORD=env_pw)
        return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)

    def dsn(self, database: str = DATABASE) -> str:
        """DSN over the cluster's Unix socket when this process may use it (a push is a dozen small round trips, and a
        socket skips the TCP stack on each), else loopback TCP; both still require the generated password."""
        sock = self.socket_path()
        if sock is None:
            return self.tcp_dsn(database)
        password = quote(self._password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@/{database}?host={quote(str(sock.parent), safe='/')}&port={self.port}"

    def tcp_dsn(self, database: str = DATABASE) -> str:
        """DSN over loopback TCP, for tools that cannot use the socket (or to compare the two)."""
        password = quote(self._password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def socket_path(self) -> Path | None:
        """The running cluster's socket if it exists and this process may connect to it: its directory is the owner's
        (0700), so that is the owner itself or root; anyone else gets None and uses TCP."""
        sock = self.pg_dir.resolve() / f".s.PGSQL.{self.port}"
        try:
            exists = sock.is_socket()
        except OSError:  # a 0700 cluster dir of another user: cannot even look
            return None
        return sock if exists and os.access(sock, os.R_OK | os.W_OK) else None

    def stop(self, force: bool = False) -> None:
        """Stop the postmaster if this process started it (a second `serve` that joined leaves it running)."""
        if not (self._started_here or force):
            return
        real = self.pg_dir.resolve()
        res = self._run([self._bin("pg_ctl"), "stop", "-D", str(real), "-m", "fast", "-w", "-t", "60"])
        if res.returncode != 0:
            log.warning("embedded_pg.stop_failed", stderr=res.stderr.strip())
        else:
            log.info("embedded_pg.stopped")
        self._started_here = False

    def kill(self) -> None:
        """Crash the postmaster (SIGKILL) to exercise recovery paths in tests."""
        real = self.pg_dir.resolve()
        pid = int((real / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        self._started_here = False


def _socket_fits(directory: Path, port: int) -> bool:
    """Whether `<directory>/.s.PGSQL.<port>` fits in a Unix socket address."""
    return len(os.fsencode(directory / f".s.PGSQL.{port}")) <= _SUN_PATH_MAX


def _tail(path: Path, lines: int = 1) -> str:
    """Last lines of the server log, for a one-line start failure message."""
    try:
        return " ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
