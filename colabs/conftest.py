"""The notebooks share one run folder (sample.ipynb trains, or reuses, train_tiny.ipynb's
smoke models), whose lock refuses a second writer: run them on one xdist worker, in turn."""

import pytest


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the marks
def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.suffix == ".ipynb":
      item.add_marker(pytest.mark.xdist_group("colab_run_folder"))
