"""Metrics to JSONL in the workdir, and to TensorBoard when tensorboardX is installed.

Only the primary process writes. Array metrics (e.g. loss per frame) become lists.
"""

import json
import pathlib
import sys
import warnings

import numpy as np


class MetricWriter:

  def __init__(self, workdir, enabled: bool = True):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tensorboard = None
    if enabled:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      try:
        self._tensorboard = _summary_writer()(str(pathlib.Path(workdir) / "tensorboard"))
      except ImportError:
        pass

  def truncate_after(self, step: int):
    """Drops records past `step`: a resumed run re-logs the steps it redoes. A torn
    line (a kill or a full disk mid-write) is dropped with a warning."""
    if self.enabled and self.path.exists():
      kept = [record for record in _records(self.path) if record["step"] <= step]
      self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    record = {"step": int(step)}
    for key, value in metrics.items():
      value = np.asarray(value)
      record[key] = value.item() if value.ndim == 0 else value.tolist()
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tensorboard is not None:
      for key, value in record.items():
        if key == "step":
          continue
        if isinstance(value, list):
          for i, item in enumerate(value):
            self._tensorboard.add_scalar(f"{key}/{i}", item, step)
        else:
          self._tensorboard.add_scalar(key, value, step)

  def close(self):
    if self._tensorboard is not None:
      self._tensorboard.close()


def _summary_writer():
  """tensorboardX's SummaryWriter class, imported with torch hidden when nothing has
  imported it yet: tensorboardX imports torch, when installed, only to accept its tensors
  (3 s of every training process's start on a 2-core CPU), and we log Python floats."""
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # `import torch` raises ImportError; tensorboardX falls back
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter


def _records(path) -> list:
  records = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    try:
      record = json.loads(line) if line.strip() else None
    except ValueError:
      record = None
      warnings.warn(f"{path}:{number}: dropping a torn record ({line[:60]!r}): the run was "
                    f"killed or the disk filled while it was written", stacklevel=3)
    if isinstance(record, dict) and "step" in record:
      records.append(record)
  return records


def read_metrics(workdir) -> list:
  """All records of a run's metrics.jsonl, in order (torn lines dropped, with a warning)."""
  return _records(pathlib.Path(workdir) / "metrics.jsonl")
