"""`--spawn`: run the real `fieldsync serve` in a throwaway data directory for the length of one simulation.

The server is a separate process started through its own CLI (embedded PostgreSQL, demo city), so the
simulator still talks to it only over HTTP; the credentials come from the file the server writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

CREDENTIALS_FILE = "demo-credentials.json"
START_TIMEOUT_S = 180.0  # initdb + migrations + demo seed on a slow disk


class SpawnError(Exception):
    """The server did not come up; the message carries the tail of its log."""


def _command() -> list[str]:
    """The installed `fieldsync` script next to this interpreter, else the same CLI module via -m."""
    script = Path(sys.executable).with_name("fieldsync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sync_server.cli"]


class SpawnedServer:
    """Context manager: start `fieldsync serve --port 0 [--workers N]`, wait for its credentials file, stop it on exit."""

    def __init__(self, keep: bool = False, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.keep, self.workers = keep, workers
        self.extra_env = env or {}
        self.dir = Path(tempfile.mkdtemp(prefix="fieldsync-sim-"))
        self.dir.chmod(0o755)  # as root the embedded cluster runs as `postgres`, which must traverse this dir
        self.data = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.credentials: dict[str, Any] = {}
        self.metrics_port = 0

    @property
    def metrics_url(self) -> str:
        """The spawned server's Prometheus endpoint (its own free port: other servers may hold the default)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def server_pids(self) -> list[int]:
        """The `fieldsync serve` process (workers are its children), for CPU accounting."""
        return [self.proc.pid] if self.proc is not None else []

    def postgres_pids(self) -> list[int]:
        """The embedded cluster's postmaster (backends are its children), or none if it is not found."""
        try:
            return [int((self.data / "pg").resolve().joinpath("postmaster.pid").read_text().splitlines()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def database_url(self) -> str:
        """The embedded cluster's DSN (diagnostics only: pg_stat_activity during the shift), empty if unknown."""
        try:
            port = (self.data / "pg-port").read_text().strip()
            password = (self.data / "pg-password").read_text().strip()
        except OSError:
            return ""
        return f"postgresql://fieldsync:{quote(password, safe='')}@127.0.0.1:{port}/fieldsync"

    def __enter__(self) -> SpawnedServer:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.metrics_port = s.getsockname()[1]
        env = {**os.environ, "FIELDSYNC_LOG_LEVEL": "warning", "FIELDSYNC_LOG_FORMAT": "json",
               "FIELDSYNC_METRICS_PORT": str(self.metrics_port), **self.extra_env}
        log = self.log_path.open("wb")
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        self.proc = subprocess.Popen([*_command(), "serve", "--data-dir", str(self.data), "--port", "0", *workers],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        try:
            self.credentials = self._wait()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait(self) -> dict[str, Any]:
        path = self.data / CREDENTIALS_FILE
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SpawnError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                creds: dict[str, Any] = json.loads(path.read_text())
                if creds.get("server"):  # the URL is filled in once the port is bound
                    return creds
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.2)
        raise SpawnError(f"server did not start within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: drain requests, stop the embedded cluster
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
