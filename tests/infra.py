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
from urllib.parse import parse_qsl, unquote, urlsplit

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
    """Let the unprivileged owner use a directory tree we created under `scratch()` (never chmod pytest's own dirs:
    pytest resets them to 0700 whenever any session starts)."""
    ids = owner()
    if ids is not None:
        for p in [path, *path.rglob("*")]:
            os.chown(p, *ids)
    return path


def scratch(prefix: str) -> Path:
    """A 0755 directory directly under the system temp dir, reachable by the cluster owner; the caller removes it."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def run_owner(args: list[str], timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the cluster owner; raise with its output when it fails."""
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout, preexec_fn=_preexec, cwd="/",
                         **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res


def dsn_parts(dsn: str) -> dict[str, str]:
    """user, password, host, port, database of a postgresql:// URL (host and port may be query parameters, as in the
    embedded cluster's Unix-socket DSN: host is then the socket directory)."""
    u = urlsplit(dsn)
    query = dict(parse_qsl(u.query))
    return {"user": unquote(u.username or ""), "password": unquote(u.password or ""),
            "host": u.hostname or query.get("host", ""), "port": str(u.port or query.get("port", 5432)),
            "database": u.path.lstrip("/")}


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


class Cluster:
    """A throwaway PostgreSQL 15 cluster with replication enabled (trust on loopback only), for failover and restore
    tests; `standby_of` clones a running primary with pg_basebackup as a streaming standby."""

    SUPERUSER = "fieldsync"

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.name = name
        self.port = free_port()
        self.proc_started = False

    def dsn(self, database: str = "postgres") -> str:
        """Trust auth on loopback: no password."""
        return f"postgresql://{self.SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _write_conf(self) -> None:
        with open(self.dir / "postgresql.auto.conf", "a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n")

    def init(self) -> Cluster:
        """initdb with settings a primary needs for a synchronous standby (synchronous_standby_names set later)."""
        self.dir.mkdir(parents=True)
        give(self.dir)
        self.dir.chmod(0o700)
        run_owner([str(PG_BIN / "initdb"), "-D", str(self.dir), "-U", self.SUPERUSER, "--auth=trust", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"])
        with open(self.dir / "postgresql.conf", "a") as f:
            f.write("wal_level = replica\nmax_wal_senders = 5\nwal_keep_size = 64MB\nhot_standby = on\n"
                    "max_connections = 100\nshared_buffers = 32MB\nfsync = off\nsynchronous_commit = on\n")
        with open(self.dir / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")
        self._write_conf()
        return self

    def standby_of(self, primary: Cluster) -> Cluster:
        """pg_basebackup of the running primary, streaming under application_name = this cluster's name."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        give(self.dir.parent)
        run_owner([str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", self.SUPERUSER,
                   "-D", str(self.dir), "-X", "stream", "-R", "--checkpoint=fast", "--no-sync"])
        self._write_conf()
        with open(self.dir / "postgresql.auto.conf", "a") as f:
            f.write(f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user={self.SUPERUSER} "
                    f"application_name={self.name}'\n")
        return self

    def start(self) -> Cluster:
        """pg_ctl start, waiting until it accepts connections."""
        run_owner([str(PG_BIN / "pg_ctl"), "start", "-D", str(self.dir), "-w", "-t", "30", "-l",
                   str(self.dir / "server.log")], timeout=40)
        self.proc_started = True
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        """One statement through psql (also as the owner), its unaligned output."""
        return run_owner([str(PG_BIN / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                          self.SUPERUSER, "-d", database, "-c", sql], timeout=30).stdout.strip()

    def postmaster_pid(self) -> int:
        """From postmaster.pid."""
        return int((self.dir / "postmaster.pid").read_text().splitlines()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster (a crashed primary); its backends exit when they notice."""
        os.kill(self.postmaster_pid(), signal.SIGKILL)

    def promote(self) -> None:
        """pg_ctl promote, waiting for the standby to accept writes."""
        run_owner([str(PG_BIN / "pg_ctl"), "promote", "-D", str(self.dir), "-w", "-t", "30"], timeout=40)

    def stop(self) -> None:
        """Immediate stop (a SIGKILLed postmaster's backends exit by themselves when they notice its death)."""
        if not self.proc_started:
            return
        subprocess.run([str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.dir), "-m", "immediate", "-w", "-t", "20"],
                       capture_output=True, timeout=30, preexec_fn=_preexec, cwd="/")
        self.proc_started = False


HAPROXY = "/usr/sbin/haproxy"


class HAProxy:
    """Debian's HAProxy in front of N local servers: round robin, health checks every 300 ms on /healthz, layer-7
    retries on a dead connection (safe here: pushes are exactly-once per device seq), WebSocket tunnels."""

    def __init__(self, root: Path, backends: list[int]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_port()
        servers = "\n".join(f"  server h{i} 127.0.0.1:{p} check" for i, p in enumerate(backends))
        (root / "haproxy.cfg").write_text(
            "global\n  maxconn 2000\n"
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n"
            "  timeout tunnel 1h\n  retries 3\n  option redispatch 1\n"
            "  retry-on conn-failure empty-response response-timeout 502 503\n  option http-buffer-request\n"
            f"frontend fieldsync\n  bind 127.0.0.1:{self.port}\n  default_backend hosts\n"
            "backend hosts\n  balance roundrobin\n  option forwardfor\n  option httpchk GET /healthz\n"
            "  http-check expect status 200\n  default-server inter 300ms fall 2 rise 1\n"
            f"{servers}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where devices connect."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HAProxy:
        """Foreground (-db) process we own."""
        log = open(self.root / "haproxy.log", "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.root / "haproxy.cfg")], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log)
        try:
            wait_port(self.port)
        except AssertionError:
            self.stop()
            raise AssertionError("haproxy did not start: " + (self.root / "haproxy.log").read_text()[-2000:]) from None
        return self

    def stop(self) -> None:
        """SIGTERM (hard stop), bounded."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
