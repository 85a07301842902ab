"""The notebooks share one run folder (sample.ipynb trains, or reuses, train_tiny.ipynb's
smoke models), whose lock refuses a second writer: run them on one xdist worker, in turn.
Their kernels see one CPU device, as on a laptop or a Colab CPU runtime, not the suite's
8 fake ones: the smoke models train there several times faster."""

import os

import pytest


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the marks
def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.suffix == ".ipynb":
      item.add_marker(pytest.mark.xdist_group("colab_run_folder"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """A notebook's kernel inherits this process's environment when it starts: give it one
  device for the duration of the notebook, then put the environment back."""
  if item.path.suffix != ".ipynb":
    return (yield)
  from tests import support
  saved = os.environ.get("XLA_FLAGS")
  os.environ["XLA_FLAGS"] = support.subprocess_env()["XLA_FLAGS"]
  try:
    return (yield)
  finally:
    if saved is None:
      os.environ.pop("XLA_FLAGS", None)
    else:
      os.environ["XLA_FLAGS"] = saved
