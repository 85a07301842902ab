"""Errors raised for bad user input: configs, data files and checkpoints."""


class ConfigError(ValueError):
  """A config field is missing, has the wrong type, or is inconsistent with another."""

  def __init__(self, field: str, reason: str):
    self.field = field
    self.reason = reason
    super().__init__(f"config.{field}: {reason}")


class DataError(RuntimeError):
  """A dataset file or folder cannot be used."""


class CheckpointError(RuntimeError):
  """A checkpoint does not match what the model expects."""


class TrainingDiverged(RuntimeError):
  """A batch or the loss stopped being finite; nothing after the last good step is saved."""

  def __init__(self, step: int, what: str, last_good):
    self.step, self.last_good = step, last_good
    where = (f"the last good checkpoint is step {last_good}" if last_good is not None
             else "no checkpoint was written yet")
    super().__init__(f"training stopped at step {step}: {what}; {where}")
