"""The CLI as a newcomer meets it: --version, every command in the README's table, --log-level anywhere, one-line
errors (port in use, unreachable database, not a MyLA311 file) found before any cluster starts, 404 for unknown paths."""

from __future__ import annotations

import argparse
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from sync_server import __version__
from sync_server.cli import build_parser, settings_from
from tests.conftest import Server
from tests.factories import World
from tests.test_cli import REPO, _env, _run


def command_paths(parser: argparse.ArgumentParser, prefix: str = "fieldsync") -> list[str]:
    """Every leaf command, e.g. 'fieldsync crew retire', from the parser itself."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.extend(command_paths(sub, f"{prefix} {name}"))
    return out or [prefix]


def test_readme_cli_table_lists_every_command() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## CLI reference"):readme.index("## Setting up a city from scratch")]
    leaves = command_paths(build_parser())
    assert len(leaves) >= 19
    rows = [line for line in table.splitlines() if line.startswith("| `fieldsync")]
    missing = []
    for leaf in leaves:
        words = leaf.split()
        group = " ".join(words[:-1]) if len(words) > 2 else leaf
        # a row may list sibling actions, e.g. "fieldsync user list|disable NAME|rotate-token NAME"
        if not any(group in row.split(" | ")[0] and words[-1] in row.split(" | ")[0] for row in rows):
            missing.append(leaf)
    assert missing == []
    assert "`fieldsync prune" in table and "--workers N" in table and "`fieldsync --version`" in table


async def test_version_and_log_level_after_the_command(tmp_path: Path) -> None:
    code, out, _ = await _run("--version")
    assert (code, out.strip()) == (0, f"fieldsync {__version__}")
    wrapped = subprocess.run(["bash", str(REPO / "ops" / "fs"), "--version"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (wrapped.returncode, wrapped.stdout.strip()) == (0, f"fieldsync {__version__}")  # from any directory
    assert settings_from(build_parser().parse_args(["migrate", "--log-level", "debug"])).log_level == "debug"
    assert settings_from(build_parser().parse_args(["--log-level", "warning", "crew", "list"])).log_level == "warning"
    code, _, err = await _run("migrate", "--log-level", "debug", "--database-url", "postgresql://u:p@127.0.0.1:1/x")
    assert code == 2 and '"level": "debug"' in err


async def test_operator_errors_are_one_line_and_start_no_cluster(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await _run("serve", "--data-dir", str(data_dir), "--port", str(port))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"fieldsync: error: port {port} on 127.0.0.1 is already in use")
    assert "--port 0" in err and "Future exception" not in err
    code, _, err = await _run("crew", "list", "--database-url", "postgresql://u:p@127.0.0.1:1/fieldsync")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("fieldsync: error: cannot reach PostgreSQL at 127.0.0.1:1 (")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "fake.csv.gz").write_bytes(b"SRNumber,CreatedDate\n")
    (tmp_path / "other.csv").write_text("name,age\nana,3\n")
    for target, says in ((tmp_path, "is a directory"), (tmp_path / "empty.csv", "is empty"),
                         (tmp_path / "fake.csv.gz", "cannot read it as gzip"),
                         (tmp_path / "other.csv", "not a MyLA311 export: missing column(s)"),
                         (tmp_path / "nope.csv", "no such file")):
        code, out, err = await _run("import-311", str(target), "--data-dir", str(data_dir), env=_env())
        assert (code, out) == (2, ""), (target, err)
        assert err.count("\n") == 1 and says in err, (target, err)
    assert not data_dir.exists()  # nothing above started (or even initialised) a cluster


@pytest.mark.parametrize("path", ["/metrics", "/docs", "/v1/nope", "/v1/tickets/x/y/z"])
async def test_unknown_paths_answer_404_with_or_without_a_token(server: Server, world: World, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer fsu_wrong"}, {"Authorization": f"Bearer {world.admin}"}):
            async with http.get(server.url + path, headers=headers) as r:
                body = await r.json()
                assert (r.status, body["error"]["code"]) == (404, "not_found"), (path, headers)
        async with http.get(server.url + "/v1/crews") as r:  # a real route still wants a token
            assert r.status == 401
