"""Real infrastructure for operations tests (pgbouncer, standby clusters): started by the test, run as the cluster's
unprivileged owner when we are root, and always stopped in finally blocks."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

PGBOUNCER = "/usr/sbin/pgbouncer"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Bounded wait until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


def owner() -> tuple[int, int] | None:
    """(uid, gid) to drop to: PostgreSQL and pgbouncer refuse root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _preexec() -> None:
    ids = owner()
    if ids is not None:
        os.setgid(ids[1])
        os.setgroups([])
        os.setuid(ids[0])


def give(path: Path) -> Path:
    """Let the unprivileged owner use a directory tree we created (and traverse to it)."""
    ids = owner()
    if ids is not None:
        for p in [path, *path.rglob("*")]:
            os.chown(p, *ids)
        for parent in path.parents:
            if parent == Path("/tmp") or parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    return path


def run_owner(args: list[str], timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the cluster owner; raise with its output when it fails."""
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout, preexec_fn=_preexec, cwd="/",
                         **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res


def dsn_parts(dsn: str) -> dict[str, str]:
    """user, password, host, port, database of a postgresql:// URL."""
    u = urlsplit(dsn)
    return {"user": unquote(u.username or ""), "password": unquote(u.password or ""), "host": u.hostname or "",
            "port": str(u.port or 5432), "database": u.path.lstrip("/")}


class PgBouncer:
    """Debian's pgbouncer in transaction pooling mode in front of one database, with a tiny server pool so that
    consecutive transactions of one client really land on different server connections."""

    def __init__(self, root: Path, upstream_dsn: str, pool_size: int = 3) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        p = dsn_parts(upstream_dsn)
        self.user, self.password, self.database = p["user"], p["password"], p["database"]
        (root / "users.txt").write_text(f'"{self.user}" "{self.password}"\n')
        (root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{self.database} = host={p['host']} port={p['port']} dbname={self.database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {root / 'users.txt'}\n"
            f"admin_users = {self.user}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 200\nserver_reset_query =\nignore_startup_parameters = extra_float_digits\n"
            f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
        )
        (root / "users.txt").chmod(0o600)
        give(root)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """Clients connect here (trust on loopback)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> PgBouncer:
        """Foreground process we own; ready once the port accepts."""
        self.proc = subprocess.Popen([PGBOUNCER, str(self.root / "pgbouncer.ini")], preexec_fn=_preexec, cwd="/",
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except AssertionError:
            self.stop()
            raise AssertionError("pgbouncer did not start: " + self.log()[-2000:]) from None
        return self

    def log(self) -> str:
        """pgbouncer's own log file."""
        try:
            return (self.root / "pgbouncer.log").read_text()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM, bounded wait, SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def rmtree(path: Path) -> None:
    """Remove a tree that may belong to the cluster owner."""
    shutil.rmtree(path, ignore_errors=True)
