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
