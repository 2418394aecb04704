"""One training per ``state_dir``: a lock file that names the run holding it.

Two trainings into one ``ckpt_dir`` replace each other's ``model.pt`` and training state epoch by epoch, and the
better model of either is lost. The first run takes ``<state_dir>/train.lock`` (its pid, host, start time and
command); a second run stops before any work with a message naming that run. A lock left by a run that no longer
exists (killed, machine rebooted: its pid is gone, or now belongs to a process started later) is stale: the next run
says so and takes it over. A run releases its lock when it ends (``finalize``, or when the Python process exits).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from .checks import check_writable_dir
from .distributed import is_main_process

logger = logging.getLogger(__name__)

LOCK_NAME = "train.lock"


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None where /proc cannot say. With the pid,
    it tells the run that wrote a lock from a later process that was given the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _is_running(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


class TrainingLock:
    """The lock of one training run on ``state_dir`` (config id ``state_dir``, created if missing).

    Args:
        state_dir: the run's state folder; the lock is ``<state_dir>/train.lock``.
        setting: the config id named in messages.
    """

    def __init__(self, state_dir: str | os.PathLike, setting: str = "state_dir") -> None:
        self.folder = Path(state_dir).expanduser().absolute()
        self.path = self.folder / LOCK_NAME
        self.setting = setting
        self.held = False

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> Path:
        """Take the lock, or stop before any work when another living run holds it.

        Only the main process takes it (rank 0 under torchrun). Returns the lock file's path.

        Raises:
            RuntimeError: another run holds the lock; naming its pid, host, start time and command, and the fix.
        """
        if not is_main_process() or self.held:
            return self.path
        check_writable_dir(self.folder, self.setting)
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(sys.argv)[:500],
        }
        # written whole under a name of this process's own, then linked: the lock never exists half-written
        partial = self.folder / f".{LOCK_NAME}.{me['host']}.{me['pid']}.partial"
        partial.write_text(json.dumps(me, indent=1))
        try:
            for _ in range(3):
                try:
                    os.link(partial, self.path)
                    break
                except FileExistsError:
                    self._resolve_existing(me)
            else:
                raise RuntimeError(
                    f"could not take the lock '{self.path}' (config id '{self.setting}'): other runs "
                    "keep taking it. Start this run again."
                )
        finally:
            partial.unlink(missing_ok=True)
        self.held = True
        atexit.register(self.release)
        return self.path

    def _resolve_existing(self, me: dict) -> None:
        """Remove a stale or this process's own lock at ``self.path``, or raise naming the living run holding it."""
        holder = self._holder()
        if holder is None:  # released in the meantime
            return
        pid, host = holder.get("pid"), holder.get("host")
        if host == me["host"] and pid == me["pid"]:  # an earlier workflow of this process (e.g. not finalized)
            self.path.unlink(missing_ok=True)
            return
        if host == me["host"] and isinstance(pid, int) and not _is_running(pid, holder.get("process_start")):
            logger.warning(
                "'%s' (config id '%s') was left by a training run that no longer exists (pid %s on %s, "
                "started %s): taking it over.",
                self.path,
                self.setting,
                pid,
                host,
                holder.get("started"),
            )
            self.path.unlink(missing_ok=True)
            return
        if not holder:
            who = "a run whose lock file cannot be read"
        else:
            who = f"pid {pid} on host '{host}', started {holder.get('started')}" + (
                f", command: {holder['command']}" if holder.get("command") else ""
            )
        elsewhere = "" if host == me["host"] else " (on another host: this one cannot tell whether it still runs)"
        raise RuntimeError(
            f"another training holds '{self.path}' (config id '{self.setting}'): {who}{elsewhere}. Two trainings "
            "into one ckpt_dir would replace each other's model.pt and training state. Wait for that run to end, or "
            "give this run its own --ckpt_dir (its state_dir follows: <ckpt_dir>_state). If that run is gone, "
            f"delete '{self.path}'."
        )

    def release(self) -> None:
        """Remove the lock if this run holds it (called by ``finalize`` and at exit; harmless twice)."""
        if not self.held:
            return
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.held = False
