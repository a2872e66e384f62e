"""Mutants of the module-level rule tables, which mutmut leaves alone (it only mutates function bodies).

The rules live in tables (TRANSITIONS, RANK, LATE, ...), so a tool that skips them misses the mutants that matter
most: a deleted late-report row, a resumed ticket that lands in `paused`, ranks shifted by one. For every
module-level assignment of each file this drops each dict entry and set element, swaps each enum member for the
next one of its enum, shifts each int by one and alters each string/bytes constant; every mutant runs the given
fast tests in a throwaway copy of the tree. Used by ops/mutation.sh; prints the score and every survivor.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _enums(module_name: str) -> dict[str, list[str]]:
    """Enum classes visible in the module by the names its source uses (aliases like `S` included)."""
    mod = importlib.import_module(module_name)
    return {name: [m.name for m in obj] for name, obj in vars(mod).items()
            if isinstance(obj, type) and issubclass(obj, Enum)}


def _sites(node: ast.AST, enums: dict[str, list[str]]) -> Iterator[tuple[int, str]]:
    """(index in ast.walk order, kind) for every mutable spot under `node`."""
    for i, n in enumerate(ast.walk(node)):
        if isinstance(n, ast.Dict):
            for k in range(len(n.keys)):
                yield i, f"drop:{k}"
        elif isinstance(n, ast.Set) and len(n.elts) > 1:
            for k in range(len(n.elts)):
                yield i, f"drop:{k}"
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in enums:
            if len(enums[n.value.id]) > 1 and n.attr in enums[n.value.id]:
                yield i, "enum"
        elif isinstance(n, ast.Constant) and type(n.value) in (int, str, bytes):
            yield i, "const"


def _mutate(stmt: ast.stmt, index: int, kind: str, enums: dict[str, list[str]], source: str) -> tuple[ast.stmt, str]:
    """A copy of the assignment `stmt` with the site at `index` (ast.walk order of its value) changed, and a one-line description of the change."""
    new = copy.deepcopy(stmt)
    assert stmt.value is not None and new.value is not None  # type: ignore[attr-defined]
    orig = list(ast.walk(stmt.value))[index]  # type: ignore[attr-defined]
    n = list(ast.walk(new.value))[index]  # type: ignore[attr-defined]
    where = f"line {getattr(orig, 'lineno', stmt.lineno)}"
    if kind.startswith("drop:"):
        k = int(kind.split(":")[1])
        if isinstance(n, ast.Dict):
            key, val = orig.keys[k], orig.values[k]  # type: ignore[attr-defined]
            text = ("**" if key is None else ast.get_source_segment(source, key) + ": ") + str(
                ast.get_source_segment(source, val))
            del n.keys[k], n.values[k]
        else:
            assert isinstance(n, ast.Set)
            text = str(ast.get_source_segment(source, orig.elts[k]))  # type: ignore[attr-defined]
            del n.elts[k]
        return new, f"{where}: drop {text}"
    if kind == "enum":
        assert isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
        members = enums[n.value.id]
        old = n.attr
        n.attr = members[(members.index(old) + 1) % len(members)]
        return new, f"{where}: {n.value.id}.{old} -> {n.value.id}.{n.attr}"
    assert isinstance(n, ast.Constant)
    old_value = n.value
    if isinstance(old_value, int):
        n.value = old_value + 1
    elif isinstance(old_value, str):
        n.value = old_value + "X"
    else:
        n.value = old_value + b"X"
    return new, f"{where}: {old_value!r} -> {n.value!r}"


def mutants(path: Path, module_name: str) -> Iterator[tuple[str, str]]:
    """(description, mutated source) for every table mutant of one file."""
    source = path.read_text("utf-8")
    lines = source.splitlines(keepends=True)
    enums = _enums(module_name)
    for stmt in ast.parse(source).body:
        if not isinstance(stmt, ast.Assign | ast.AnnAssign) or stmt.value is None:
            continue
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets):
            continue  # export list, not behaviour
        for index, kind in _sites(stmt.value, enums):
            new_stmt, desc = _mutate(stmt, index, kind, enums, source)
            text = ast.unparse(new_stmt)
            yield desc, "".join(lines[: stmt.lineno - 1]) + text + "\n" + "".join(lines[stmt.end_lineno or stmt.lineno:])


def _run_tests(copy_root: Path, tests: list[str], limit: float, fresh: tuple[str, ...]) -> bool:
    """True when the fast tests pass (the mutant survives).

    Runs pytest in a forked child of this process, which has already imported pytest and the libraries, so a
    mutant costs its tests and not an interpreter start (the machine is shared: keep each mutant cheap). The child
    forgets the packages in `fresh` and imports them again from the copy, i.e. with the mutated file.
    """
    pid = os.fork()
    if pid == 0:  # child
        code = 3
        try:
            os.chdir(copy_root)
            for name in [m for m in sys.modules if m.split(".")[0] in fresh]:
                del sys.modules[name]
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the pure tests need no plugin; loading them costs most
            import pytest

            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--noconftest", "-o", "addopts=", *tests]))
        finally:
            os._exit(code)
    deadline = time.monotonic() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return False  # a hang is a detected change, like mutmut's "timeout"
        time.sleep(0.05)


def main() -> int:
    """Run every table mutant of the given files; exit 1 when any survives."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="+", help="repository-relative module paths, e.g. sync_server/domain/states.py")
    ap.add_argument("--tests", nargs="+", default=["tests/domain", "tests/protocol"])
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds for the whole run")
    args = ap.parse_args()
    deadline = time.monotonic() + args.budget
    work = Path(tempfile.mkdtemp(prefix="fs-table-mutants-"))
    try:
        for part in ("protocol", "sync_server", "tests", "pyproject.toml"):
            src = ROOT / part
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / part)
        sys.path.insert(0, str(work))
        import pytest  # noqa: F401  (loaded once here; every forked mutant run reuses it)

        import protocol  # noqa: F401
        fresh = ("sync_server", "tests") + (("protocol",) if any(f.startswith("protocol/") for f in args.files) else ())
        if not _run_tests(work, args.tests, 600, fresh):
            print("mutate_tables: the unmutated tree fails its tests; fix that first", file=sys.stderr)
            return 2
        survived = total = 0
        for rel in args.files:
            target = work / rel
            original = target.read_text("utf-8")
            module_name = rel.removesuffix(".py").replace("/", ".")
            killed = count = 0
            for desc, text in mutants(ROOT / rel, module_name):
                if time.monotonic() > deadline:
                    print(f"mutate_tables: budget of {args.budget:.0f}s spent; results are partial", file=sys.stderr)
                    break
                target.write_text(text, "utf-8")
                try:
                    alive = _run_tests(work, args.tests, 300, fresh)
                finally:
                    target.write_text(original, "utf-8")
                count += 1
                if alive:
                    print(f"-- survived: {rel} {desc}", flush=True)
                else:
                    killed += 1
            total += count
            survived += count - killed
            pct = f"{100 * killed / count:.1f}" if count else "n/a"
            print(f"{rel} (tables): {killed}/{count} killed ({pct} %)", flush=True)
        return 1 if survived else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
