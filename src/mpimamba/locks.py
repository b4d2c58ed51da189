"""One command at a time per output folder: a lock file beside the folder, naming the process that holds it.

`folder_lock(run)` creates `.RUN.lock` next to `run` (not inside it, so a run folder holds only what a run
writes) with O_CREAT | O_EXCL, which only one process can win. A second command on the same folder is
refused with the holder's process id, host, start time and command line. A lock whose process is gone (on
this host) is stale and is taken over; one held from another host cannot be checked and is reported with
the path to remove by hand if that process is known to be dead.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _holder(lock: Path) -> dict | None:
    """The lock's contents, or None when it is unreadable (a crash between create and write)."""
    try:
        info = json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold the lock of `folder` for the block; raise FileExistsError naming the holder if another live
    process has it."""
    folder = Path(folder)
    lock = lock_path(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and holder["pid"] == os.getpid() and holder.get("host") == mine["host"]:
                raise FileExistsError(f"{what} {folder} is already locked by this process") from None
            if holder is not None and (holder.get("host") != mine["host"] or _alive(holder["pid"])):
                where = "" if holder.get("host") == mine["host"] else f" on host {holder.get('host')}"
                raise FileExistsError(
                    f"{what} {folder} is in use by process {holder['pid']}{where} since {holder.get('started')} "
                    f"(`{holder.get('command', '?')}`); wait for it to end, or stop it"
                    + (f"; if it is dead, remove {lock}" if where else "")) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone (or it never wrote its name)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    else:
        raise FileExistsError(f"cannot take the lock {lock} of {what} {folder}: another process keeps taking it")
    try:
        yield lock
    finally:
        holder = _holder(lock)
        if holder is not None and holder["pid"] == os.getpid():
            lock.unlink(missing_ok=True)
