"""One run per workdir: a lock file that process 0 takes and every process checks.

Two runs writing one workdir would interleave their checkpoints and metrics. The lock
(`WORKDIR/RUN_LOCK.json`) names its holder: host, PID, the process's start time and a
random token. A second run fails at once with that name. A lock whose holder is gone is
stale and is taken over, with one line that says so:
- same host: the PID no longer runs, or now belongs to a process started at another
  time (the PID was reused);
- another host: its heartbeat, refreshed every `HEARTBEAT_SECONDS` while the run lives,
  is older than `stale_after` seconds.
On a local disk the lock is created with an atomic hard link, so two runs starting
together cannot both take it; on an object store (gs://) it is best effort.
"""

import json
import logging
import os
import secrets
import socket
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from ardiffusion_jax.errors import WorkdirLocked

log = logging.getLogger(__name__)
LOCK_NAME = "RUN_LOCK.json"
HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 900.0  # a lock from another host with no heartbeat for this long


def _process_start(pid: int):
  """The kernel's start time of `pid` (Linux clock ticks), or None where unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: it exists
    return True
  return True


def describe(holder: dict) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
  return f"host {holder.get('host')}, PID {holder.get('pid')}, started {started}"


class WorkdirLock:
  """Held by one run of `workdir` from `acquire()` to `release()`."""

  def __init__(self, workdir, stale_after: float = STALE_AFTER_SECONDS):
    self.path = epath.Path(workdir) / LOCK_NAME
    self.stale_after = stale_after
    self.token = None
    self._last_beat = 0.0

  def _read(self):
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except ValueError:  # our writes are atomic, so this is no run's lock: stale
      return {"host": "?", "pid": -1, "started": self.path.stat().mtime, "heartbeat": 0}

  def _record(self) -> dict:
    now = time.time()
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process_start": _process_start(pid),
            "started": now, "heartbeat": now, "token": self.token}

  def _write_new(self, record) -> bool:
    """Creates the lock file holding `record`; False if it already exists."""
    partial = self.path.parent / f"{LOCK_NAME}.{record['token']:08x}.partial"
    partial.write_text(json.dumps(record))
    local = not str(self.path).startswith(("gs://", "s3://"))
    try:
      if local:
        os.link(partial, self.path)  # atomic, and fails if the lock exists
        return True
      if self.path.exists():
        return False
      partial.rename(self.path)
      return True
    except FileExistsError:
      return False
    finally:
      if partial.exists():
        partial.unlink()

  def stale_reason(self, holder: dict):
    """Why `holder` no longer holds the lock, or None while it may still run."""
    if holder.get("host") == socket.gethostname():
      pid = int(holder.get("pid", -1))
      if pid <= 0 or not _pid_alive(pid):
        return "its process is no longer running"
      recorded, now = holder.get("process_start"), _process_start(pid)
      if recorded is not None and now is not None and recorded != now:
        return "its PID now belongs to another process"
      return None
    age = time.time() - float(holder.get("heartbeat", 0))
    if age > self.stale_after:
      return f"its heartbeat is {age / 60:.0f} minutes old"
    return None

  def _take(self):
    # An int32, so that process 0 can share it with the others (jax without x64).
    self.token = 1 + secrets.randbelow(2**31 - 2)
    for _ in range(3):
      record = self._record()
      if self._write_new(record):
        self._last_beat = record["heartbeat"]
        return
      holder = self._read()
      if holder is None:  # released meanwhile: try again
        continue
      reason = self.stale_reason(holder)
      if reason is None:
        raise WorkdirLocked(f"{self.path.parent} is in use by another run ({describe(holder)}; "
                            f"lock {self.path}): wait for it to finish, stop it, or choose "
                            f"another --workdir")
      # Renaming away the stale lock is atomic: of two runs taking over, one wins.
      try:
        self.path.rename(self.path.parent / f"{LOCK_NAME}.stale-{self.token:08x}")
      except FileNotFoundError:
        continue
      (self.path.parent / f"{LOCK_NAME}.stale-{self.token:08x}").unlink()
      log.warning("taking over the lock of %s: %s (%s)", self.path.parent, reason,
                  describe(holder))
    raise WorkdirLocked(f"could not take the lock {self.path}: other runs keep taking it")

  def acquire(self):
    """Process 0 takes the lock; every process then checks that the lock it sees is
    the one process 0 took (the same token), so all of them fail or none does."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    error = None
    if jax.process_index() == 0:
      try:
        self._take()
      except WorkdirLocked as failure:
        error = failure
    if jax.process_count() > 1:
      mine = self.token if jax.process_index() == 0 and error is None else -1
      token = int(np.asarray(multihost_utils.process_allgather(np.array(mine, np.int32)))[0])
      if token < 0 and error is None:
        error = WorkdirLocked(f"process 0 could not take the lock {self.path} (see its error)")
      elif token >= 0 and jax.process_index() != 0:
        self.token = token
        holder = self._read()
        if holder is None or holder.get("token") != self.token:
          error = WorkdirLocked(f"{self.path} is not the lock process 0 took: is the workdir "
                                f"on a disk every host shares?")
      ok = multihost_utils.process_allgather(np.array(error is None))
      if error is None and not np.all(ok):
        error = WorkdirLocked(f"another process could not check the lock {self.path}")
    if error is not None:
      self.token = None
      raise error
    return self

  def heartbeat(self):
    """Refreshes the lock's heartbeat at most every HEARTBEAT_SECONDS (process 0)."""
    now = time.time()
    if jax.process_index() != 0 or self.token is None or now - self._last_beat < HEARTBEAT_SECONDS:
      return
    holder = self._read()
    if holder is None or holder.get("token") != self.token:
      raise WorkdirLocked(f"the lock {self.path} was taken by another run "
                          f"({describe(holder or {})}) while this one held it")
    holder["heartbeat"] = now
    partial = self.path.parent / f"{LOCK_NAME}.{self.token:08x}.beat"
    partial.write_text(json.dumps(holder))
    partial.replace(self.path)  # atomic, over the old lock
    self._last_beat = now

  def release(self):
    if jax.process_index() == 0 and self.token is not None:
      holder = self._read()
      if holder is not None and holder.get("token") == self.token:
        self.path.unlink()
    self.token = None
