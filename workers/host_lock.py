"""A lock the processes of one host share through a file (workers on a host share its model cache)."""
from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def host_lock(path: Path, wait_s: float) -> Iterator[bool]:
    """Hold an exclusive lock on `path` for the block; yields False if `wait_s` ran out first (the block runs unlocked).

    The lock ends with the file's handle, so a process that dies holding it releases it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    held = False
                    break
                time.sleep(0.2)
        yield held
