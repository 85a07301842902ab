"""Weight conversion: PyTorch state dicts in, our parameter trees out (and back).

State dicts are read one tensor at a time (`open_state_dict`), so converting the paper's
672M-parameter DiT holds the converted tree and one tensor, not three copies.
"""

import json
import pathlib

import flax
import numpy as np

from ardiffusion_jax.errors import CheckpointError


class StateDict:
  """A read-only, lazy view of a state dict: keys, shapes without loading, and tensors
  as float32 numpy arrays on access. A leading `module.` (DDP) is stripped."""

  def __init__(self, path, shapes: dict, load, names: dict = None):
    self.path = str(path)
    self._shapes = shapes  # key -> shape
    self._load = load  # stored name -> numpy array
    self._names = names or {key: key for key in shapes}  # key -> stored name

  def keys(self):
    return self._shapes.keys()

  def __contains__(self, key):
    return key in self._shapes

  def shape(self, key) -> tuple:
    return tuple(self._shapes[key])

  def __getitem__(self, key) -> np.ndarray:
    return np.asarray(self._load(self._names[key]), np.float32)

  def without(self, keys) -> "StateDict":
    drop = set(keys)
    keep = {k: v for k, v in self._shapes.items() if k not in drop}
    return StateDict(self.path, keep, self._load, {k: self._names[k] for k in keep})

  def mapped(self, mapping, extra: dict) -> "StateDict":
    """A renamed/transformed view: mapping(key) -> (new key or None to drop, fn or None);
    `extra` adds in-memory tensors."""
    shapes, sources = {}, {}
    for key in self.keys():
      new, fn = mapping(key)
      if new is None:
        continue
      sources[new] = (key, fn)
      # A transform's output shape: apply it to a dummy of the input's shape.
      shapes[new] = self.shape(key) if fn is None else fn(np.empty(self.shape(key), np.bool_)).shape
    for new, value in extra.items():
      shapes[new], sources[new] = value.shape, (None, lambda _, v=value: v)

    def load(new):
      key, fn = sources[new]
      value = self[key] if key is not None else None
      return value if fn is None else fn(value)
    return StateDict(self.path, shapes, load)


SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16",
                      "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def _read_safetensors(path):
  """(shapes, load) for a .safetensors file. Tensors are read with plain file reads, not
  a memory map, so pages already converted do not stay resident."""
  import ml_dtypes
  with open(path, "rb") as f:
    length = int.from_bytes(f.read(8), "little")
    try:
      header = json.loads(f.read(length))
    except ValueError as error:
      raise CheckpointError(f"{path} is not a safetensors file (bad header)") from error
  header.pop("__metadata__", None)
  start = 8 + length
  shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}

  def load(name):
    entry = header[name]
    dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None:
      raise CheckpointError(f"{path}: {name} has unsupported dtype {entry['dtype']}")
    dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    begin, end = entry["data_offsets"]
    with open(path, "rb") as f:
      f.seek(start + begin)
      data = np.frombuffer(f.read(end - begin), dtype)
    return data.reshape(shapes[name])
  return shapes, load


def open_state_dict(path) -> StateDict:
  """.safetensors, .npz, or .pth/.pt/.bin (needs torch; loaded with
  mmap where the file allows). A `state_dict` entry (Lightning) is unwrapped."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path} not found")
  if path.suffix == ".safetensors":
    shapes, load = _read_safetensors(path)
    stored = list(shapes)
  elif path.suffix == ".npz":
    data = np.load(path)
    stored = list(data.files)
    shapes = {name: data[name].shape for name in stored}
    load = data.__getitem__
  else:
    try:
      import torch
    except ImportError as error:
      raise CheckpointError(f"reading {path} needs PyTorch: pip install 'ardiffusion_jax[convert]' "
                            "(CPU is enough), or convert the file to .safetensors") from error
    try:
      state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # old (non-zip) serialisation cannot be memory-mapped
      state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    stored = list(state)
    shapes = {name: tuple(state[name].shape) for name in stored}
    load = lambda name: state[name].float().numpy()
  names = {}
  for name in stored:
    key = name.removeprefix("module.")
    if key in names:
      raise CheckpointError(f"{path} holds both {key!r} and 'module.{key}'")
    names[key] = name
  return StateDict(path, {key: shapes[name] for key, name in names.items()}, load, names)


def read_state_dict(path) -> dict:
  """A whole state dict as float32 numpy arrays (small files such as LPIPS)."""
  state = open_state_dict(path)
  return {key: state[key] for key in state.keys()}


def _to_device_in_place(tree: dict):
  """numpy leaves -> jax arrays, one at a time, dropping each numpy array as it goes:
  orbax would otherwise copy the whole tree once more while saving."""
  import jax
  for key, value in tree.items():
    if isinstance(value, dict):
      _to_device_in_place(value)
    else:
      tree[key] = jax.device_put(value)


def write_model_checkpoint(output, config, state: dict, step: int = 0):
  """An orbax checkpoint in our run layout (`OUTPUT/checkpoints/STEP`) holding model
  weights only: `ema_params` (+ `constants`) for a DiT, `params` for an AR-VAE."""
  from ardiffusion_jax.train.checkpoint import Checkpointer
  checkpointer = Checkpointer(pathlib.Path(output) / "checkpoints", async_save=False)
  try:
    if checkpointer.latest_step() is not None:
      raise CheckpointError(f"{output} already holds a checkpoint; choose a new --output folder")
    _to_device_in_place(state)
    checkpointer.save(step, state, config=config, force=True)
    checkpointer.wait()
  finally:
    checkpointer.close()


# A conv + BatchNorm network's leaves -> (PyTorch suffix, layout change).
_CONV_BN_LEAVES = {
    ("params", "kernel"): ("weight", lambda w: w.transpose(tuple(range(2, w.ndim)) + (1, 0))),
    ("params", "scale"): ("weight", None),
    ("params", "bias"): ("bias", None),
    ("batch_stats", "mean"): ("running_mean", None),
    ("batch_stats", "var"): ("running_var", None)}


def conv_bn_variables(state, abstract_variables, module_key, ignored=()) -> dict:
  """Maps a PyTorch conv/BatchNorm state dict onto Flax variables of the same network:
  `module_key(path)` names the PyTorch module of our module path. Raises CheckpointError
  naming every missing key, wrong shape and unexpected key (besides `ignored` and the
  BatchNorm counters)."""
  flat, problems, used = {}, [], set()
  for path, leaf in flax.traverse_util.flatten_dict(abstract_variables).items():
    suffix, layout = _CONV_BN_LEAVES[(path[0], path[-1])]
    key = f"{module_key(path[1:-1])}.{suffix}"
    used.add(key)
    if key not in state:
      problems.append(f"missing {key}")
      continue
    value = layout(state[key]) if layout else state[key]
    if value.shape != leaf.shape:
      problems.append(f"{key}: shape {state.shape(key)} does not fit {leaf.shape}")
      continue
    flat[path] = value
  problems += [f"unexpected {k}" for k in state.keys() if k not in used and k not in ignored
               and not k.endswith("num_batches_tracked")]
  if problems:
    raise CheckpointError(f"{state.path} does not match: " + "; ".join(problems))
  return flax.traverse_util.unflatten_dict(flat)


def save_variables(path, variables):
  np.savez(path, **flax.traverse_util.flatten_dict(variables, sep="/"))


def load_variables(path, missing_message: str) -> dict:
  """Variables from an .npz `save_variables` wrote; `missing_message` when absent."""
  if not pathlib.Path(path).is_file():
    raise CheckpointError(missing_message)
  with np.load(path) as data:
    return flax.traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")
