"""The mutants named in issue 16, applied one at a time to a copy of the tree: the fast tests must fail on each.

Each was a rule change that no test noticed before the hand-written tables and golden vectors existed. Exit 1 if
any survives. Run: .venv/bin/python ops/mutation_examples.py (about a minute on an idle machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (name, file, exact text, replacement)
EX = [
    ("resume -> paused", "sync_server/domain/states.py", "Action.RESUME:             (Actor.CREW, frozenset({S.PAUSED}), S.IN_PROGRESS)", "Action.RESUME:             (Actor.CREW, frozenset({S.PAUSED}), S.PAUSED)"),
    ("actor check never raises", "sync_server/domain/states.py", "        raise TransitionError(action, current, actor)\n    if current not in sources:", "        pass\n    if current not in sources:"),
    ("late complete-on-closed row deleted", "sync_server/domain/conflicts.py", '    ("complete", S.CLOSED): Rule.KEEP_LATE,\n', ""),
    ("late unable_to_complete rows deleted", "sync_server/domain/conflicts.py", '    **{("unable_to_complete", s): Rule.KEEP_LATE for s in S},\n', ""),
    ("late set_items rows deleted", "sync_server/domain/conflicts.py", '    **{("set_items", s): Rule.KEEP_LATE for s in S},\n', ""),
    ("late set_resolution rows deleted", "sync_server/domain/conflicts.py", '    **{("set_resolution", s): Rule.KEEP_LATE for s in S},\n', ""),
    ("late note kept, never attached", "sync_server/domain/conflicts.py", "            out = _append(t, op, args, dev)\n", "            out = Outcome(MutationStatus.MERGED, audit_action=op)\n"),
    ("reopened not acknowledgeable", "sync_server/domain/states.py", "Action.ACKNOWLEDGE:        (Actor.CREW, frozenset({S.ASSIGNED, S.REOPENED}), S.ACKNOWLEDGED)", "Action.ACKNOWLEDGE:        (Actor.CREW, frozenset({S.ASSIGNED}), S.ACKNOWLEDGED)"),
    ("reopened not declinable", "sync_server/domain/states.py", "Action.DECLINE:            (Actor.CREW, frozenset({S.ASSIGNED, S.ACKNOWLEDGED, S.REOPENED}), S.UNASSIGNED)", "Action.DECLINE:            (Actor.CREW, frozenset({S.ASSIGNED, S.ACKNOWLEDGED}), S.UNASSIGNED)"),
    ("decline keeps crew", "sync_server/domain/conflicts.py", "        t.crew_id = None\n", ""),
    ("decline drops reason code", "sync_server/domain/conflicts.py", "    elif target is S.UNASSIGNED:\n        t.reason_code = args.reason_code\n", "    elif target is S.UNASSIGNED:\n        pass\n"),
    ("no terminal conflict on second completion", "sync_server/domain/conflicts.py", "                out.conflicts.append(Conflict(\"terminal_conflict\"", "                (Conflict(\"terminal_conflict\""),
    ("ranks shifted by one (acknowledged)", "sync_server/domain/states.py", "S.ACKNOWLEDGED: 2,", "S.ACKNOWLEDGED: 3,"),
    ("ranks shifted by one (in_progress/paused)", "sync_server/domain/states.py", "S.IN_PROGRESS: 3, S.PAUSED: 3,", "S.IN_PROGRESS: 2, S.PAUSED: 2,"),
    ("removal_reason for unassigned wrong", "sync_server/domain/states.py", "    S.UNASSIGNED: RemovalReason.DECLINED,\n", "    S.UNASSIGNED: RemovalReason.UNASSIGNED,\n"),
    ("canonical JSON ensure_ascii=True", "protocol/canonical.py", "data, sort_keys=True, separators=(\",\", \":\"), ensure_ascii=False", "data, sort_keys=True, separators=(\",\", \":\"), ensure_ascii=True"),
]


def main() -> int:
    """Apply each example mutant to a throwaway copy, run the fast tests, report KILLED/SURVIVED; 1 if any survived."""
    work = Path(tempfile.mkdtemp(prefix="fs-examples-"))
    try:
        for part in ("protocol", "sync_server", "tests", "pyproject.toml"):
            (shutil.copytree if (ROOT / part).is_dir() else shutil.copy2)(ROOT / part, work / part)
        env = {**os.environ, "PYTHONPATH": str(work), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        survived = 0
        for name, rel, old, new in EX:
            target = work / rel
            original = target.read_text("utf-8")
            if original.count(old) != 1:
                print(f"STALE     {name}: the code changed; update this example", flush=True)
                survived += 1
                continue
            target.write_text(original.replace(old, new), "utf-8")
            tests = ["tests/domain"] if rel.startswith("sync_server/domain/") else ["tests/protocol"]
            cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--noconftest", "-o",
                   "addopts=", *tests]
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False)
            target.write_text(original, "utf-8")
            last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
            print(("KILLED  " if proc.returncode else "SURVIVED") + f"  {name}: {last}", flush=True)
            survived += proc.returncode == 0
        return 1 if survived else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
