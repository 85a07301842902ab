"""`ardiff convert lpips`: torchvision VGG-16 + LPIPS v0.1 heads -> one .npz."""

import numpy as np

from ardiffusion_jax.convert import read_state_dict
from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.eval.nets.lpips import TAP_AFTER, VGG_CHANNELS, VGG_CONVS


def params_from_torch_state(vgg_state: dict, lin_state: dict) -> dict:
  """Maps torchvision VGG-16 and LPIPS head state dicts (numpy arrays) to LPIPS params.

  Raises CheckpointError naming every missing key or wrong shape.
  """
  params, problems = {}, []

  def take(state, key, shape):
    if key not in state:
      problems.append(f"missing {key}")
      return None
    value = np.asarray(state[key], np.float32)
    if value.shape != shape:
      problems.append(f"{key}: shape {value.shape}, expected {shape}")
      return None
    return value

  in_channels = 3
  for index, channels in zip(VGG_CONVS, VGG_CHANNELS):
    kernel = take(vgg_state, f"features.{index}.weight", (channels, in_channels, 3, 3))
    bias = take(vgg_state, f"features.{index}.bias", (channels,))
    if kernel is not None and bias is not None:
      params[f"conv_{index}"] = {"kernel": kernel.transpose(2, 3, 1, 0), "bias": bias}
    in_channels = channels
  for k, index in enumerate(TAP_AFTER):
    channels = VGG_CHANNELS[VGG_CONVS.index(index)]
    head = take(lin_state, f"lin{k}.model.1.weight", (1, channels, 1, 1))
    if head is not None:
      params[f"lin_{k}"] = head.reshape(channels)
  if problems:
    raise CheckpointError("LPIPS weights do not match: " + "; ".join(problems))
  return params


def save_lpips_params(path, params: dict):
  """Writes params as the flat .npz `eval.nets.lpips.load_lpips_params` reads."""
  flat = {f"{name}/{leaf}": value for name, node in params.items()
          for leaf, value in (node.items() if isinstance(node, dict) else [("weight", node)])}
  np.savez(path, **flat)


def convert_lpips(vgg_path, lin_path, out_path, allow_nonfinite: bool = False) -> dict:
  """Reads both files, checks every key and shape, writes `out_path` (.npz)."""
  params = params_from_torch_state(read_state_dict(vgg_path, allow_nonfinite),
                                   read_state_dict(lin_path, allow_nonfinite))
  save_lpips_params(out_path, params)
  return params
