"""Weight conversion: PyTorch state dicts in, our parameter trees out (and back)."""

import pathlib

import numpy as np

from ardiffusion_jax.errors import CheckpointError


def read_state_dict(path) -> dict:
  """A PyTorch state dict as numpy arrays, from .pth/.pt/.bin (needs torch),
  .safetensors or .npz."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path} not found")
  if path.suffix == ".npz":
    with np.load(path) as data:
      return {key: data[key] for key in data.files}
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file
    return load_file(str(path))
  try:
    import torch
  except ImportError as error:
    raise CheckpointError(f"reading {path} needs PyTorch: pip install torch (CPU is enough), "
                          "or convert the file to .safetensors elsewhere") from error
  state = torch.load(str(path), map_location="cpu", weights_only=True)
  state = state.get("state_dict", state)
  return {key.removeprefix("module."): value.float().numpy() for key, value in state.items()}
