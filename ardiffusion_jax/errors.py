"""Errors raised for bad user input: configs, data files and checkpoints."""


class ConfigError(ValueError):
  """A config field is missing, has the wrong type, or is inconsistent with another."""

  def __init__(self, field: str, reason: str):
    self.field = field
    self.reason = reason
    super().__init__(f"config.{field}: {reason}")


class ArgumentError(ValueError):
  """A function's argument is out of range or inconsistent with the model or data;
  `argument` is its name. The CLI prints the flag that sets it instead."""

  def __init__(self, argument: str, reason: str):
    self.argument = argument
    self.reason = reason
    super().__init__(f"{argument}: {reason}")


class DataError(RuntimeError):
  """A dataset file or folder cannot be used."""


class CheckpointError(RuntimeError):
  """A checkpoint does not match what the model expects."""


class WorkdirLocked(RuntimeError):
  """Another run holds the workdir (train/lock.py)."""


class TrainingDiverged(RuntimeError):
  """A batch, the loss, the gradients or the updated state stopped being finite. No
  non-finite state is ever saved, so `last_good` (the newest checkpoint) is finite."""

  def __init__(self, step: int, what: str, last_good):
    self.step, self.last_good = step, last_good
    where = (f"the last finite checkpoint, step {last_good}, is on disk" if last_good is not None
             else "no checkpoint was written yet")
    super().__init__(f"training stopped at step {step}: {what}; nothing of it was saved and "
                     f"{where}")
