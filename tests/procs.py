"""Processes read from /proc, for tests that check a killed run leaves nothing behind."""
import time
from pathlib import Path


def _stat(pid):
    """(state, ppid, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and ')'
    return fields[0], int(fields[1]), int(fields[19])


def identity(pid):
    """(pid, start time): the process and not a later one with its pid; None when gone."""
    st = _stat(pid)
    return None if st is None else (pid, st[2])


def pid_alive(pid):
    """pid is a running process (not gone, not a zombie)."""
    st = _stat(pid)
    return st is not None and st[0] not in "ZX"


def descendants(pid):
    """{(pid, start time)} of every living descendant of pid."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[0] not in "ZX":
            children.setdefault(st[1], []).append((int(entry.name), st[2]))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child[0])
    return found


def alive(procs):
    """Those of procs (pid, start time) still running (not the same pid reused, no zombie)."""
    return {(pid, start) for pid, start in procs
            if (st := _stat(pid)) and st[2] == start and st[0] not in "ZX"}


def wait_gone(procs, seconds=20):
    deadline = time.time() + seconds
    while alive(procs) and time.time() < deadline:
        time.sleep(0.2)
    return alive(procs)
