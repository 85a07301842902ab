"""Weight conversion: PyTorch state dicts in, our parameter trees out (and back).

State dicts are read one tensor at a time (`open_state_dict`), so converting the paper's
672M-parameter DiT holds the converted tree and one tensor, not three copies.
"""

import pathlib
import zipfile
import zlib

import flax
import numpy as np

from ardiffusion_jax.errors import CheckpointError


class StateDict:
  """A read-only, lazy view of a state dict: keys, shapes without loading, and tensors
  as float32 numpy arrays on access. A leading `module.` (DDP) is stripped.

  Access refuses integer or bool tensors (a float weight was expected) and, unless
  `allow_nonfinite`, NaN or inf: either would convert silently into a broken model."""

  def __init__(self, path, shapes: dict, load, names: dict = None, allow_nonfinite: bool = False):
    self.path = str(path)
    self._shapes = shapes  # key -> shape
    self._load = load  # stored name -> numpy array (its stored dtype)
    self._names = names or {key: key for key in shapes}  # key -> stored name
    self.allow_nonfinite = allow_nonfinite

  def keys(self):
    return self._shapes.keys()

  def __contains__(self, key):
    return key in self._shapes

  def shape(self, key) -> tuple:
    return tuple(self._shapes[key])

  def __getitem__(self, key) -> np.ndarray:
    value = np.asarray(self._load(self._names[key]))
    if value.dtype.kind != "f":
      raise CheckpointError(f"{self.path}: {key} is stored as {value.dtype}, not a floating-point "
                            "type; is this the right weights file?")
    value = value.astype(np.float32, copy=False)
    bad = value.size - int(np.count_nonzero(np.isfinite(value)))
    if bad and not self.allow_nonfinite:
      raise CheckpointError(f"{self.path}: {key} holds {bad} non-finite values (NaN or inf) of "
                            f"{value.size}; the file is damaged or its training diverged (convert it "
                            "anyway with allow_nonfinite=True: --allow-nonfinite)")
    return value

  def without(self, keys) -> "StateDict":
    drop = set(keys)
    keep = {k: v for k, v in self._shapes.items() if k not in drop}
    return StateDict(self.path, keep, self._load, {k: self._names[k] for k in keep},
                     self.allow_nonfinite)

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
    return StateDict(self.path, shapes, load, allow_nonfinite=self.allow_nonfinite)


# What safetensors' reasons (0.8.0 wording) mean for a downloaded weights file. The
# library's reason stays in the message; ours says which damage it is.
_SAFETENSORS_DAMAGE = (
    ("header too small", "is truncated: shorter than a safetensors header"),
    ("header too large", "is truncated or not a safetensors file: its first 8 bytes give an "
     "impossible header length"),
    ("invalid header length", "is truncated or not a safetensors file: its header runs past "
     "the end of the file"),
    ("incomplete metadata", "is truncated, or has bytes after its last tensor: its tensors do "
     "not end where the file does"),
    ("invalid shape, data type, or offset", "is not a valid safetensors file: a tensor's "
     "data_offsets do not span its shape and dtype"),
    ("invalid offset", "is not a valid safetensors file: a tensor's data_offsets are not "
     "[begin, end] starting where the previous tensor ends"),
    ("invalid JSON", "is not a safetensors file, or a damaged one: its header is not the "
     "expected JSON"),
    ("invalid UTF-8", "is not a safetensors file, or a damaged one: its header is not text"))
GIT_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def _safetensors_damage(path, error) -> CheckpointError:
  """The CheckpointError for a file safetensors refused to open: the file, the damage, the fix."""
  reason = " ".join(str(error).removeprefix("Error while deserializing header: ").split())
  if "header too large" in reason:
    # The library reads a git-LFS pointer's text as a header length and stops there; the
    # cure (fetch the real file) is not something its reason suggests.
    with open(path, "rb") as f:
      if f.read(len(GIT_LFS_POINTER)) == GIT_LFS_POINTER:
        return CheckpointError(f"{path} is a git-LFS pointer, not the weights: run `git lfs "
                               "pull` in its repository, or download the real file")
  meaning = next((m for key, m in _SAFETENSORS_DAMAGE if key in reason),
                 "is not a readable safetensors file")
  return CheckpointError(f"{path} {meaning} ({reason}); download it again")


def _read_safetensors(path):
  """(shapes, load) for a .safetensors file. safetensors checks every header entry against
  the file on opening, so a truncated download is named here, not as a reshape error.

  backend="pread" (safetensors 0.8+) reads each tensor with a plain file read. The default
  memory map keeps every page read resident while the file is open: converting the paper
  DiT then peaked at 7.96 GB, against 5.33 GB with plain reads (`python -m
  ardiffusion_jax.bench convert`, 2-core CPU, 2026-12-02)."""
  import ml_dtypes  # registers the "bfloat16" numpy name safetensors asks numpy for
  from safetensors import SafetensorError, safe_open
  try:
    handle = safe_open(path, framework="numpy", backend="pread")
  except SafetensorError as error:
    raise _safetensors_damage(path, error) from error
  shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.offset_keys()}

  def load(name):
    try:
      value = handle.get_tensor(name)
    except SafetensorError as error:  # the header was fine; the file changed since
      raise CheckpointError(f"{path}: tensor {name!r} could not be read ({error}); download "
                            "it again") from error
    except (AttributeError, TypeError) as error:  # numpy has no type for it (F8, F4, ...)
      raise CheckpointError(f"{path}: {name} has unsupported dtype "
                            f"{handle.get_slice(name).get_dtype()}") from error
    if value.dtype == ml_dtypes.bfloat16:  # a floating type numpy does not know: widen it here
      return value.astype(np.float32)
    return value
  return shapes, load


def _open_npz(path):
  """np.load of an .npz, never unpickling; a file that is not one is named."""
  try:
    data = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
    raise CheckpointError(f"{path} is not a readable .npz archive (truncated, or another kind "
                          f"of file; only plain arrays are read, nothing is unpickled): {error}") from error
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise CheckpointError(f"{path} holds a single .npy array, not an .npz archive of named arrays")
  return data


def _npz_array(data, path, name) -> np.ndarray:
  try:
    return data[name]
  except ValueError as error:
    if "allow_pickle" in str(error):
      raise CheckpointError(f"{path} holds pickled object arrays, which are not loaded for "
                            f"safety ({name!r}); save plain numeric arrays instead") from error
    raise CheckpointError(f"{path}: {name!r} cannot be read ({error}); the .npz is damaged") from error
  except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
    raise CheckpointError(f"{path}: {name!r} cannot be read ({error}); the .npz is truncated "
                          "or damaged") from error


def _torch_array(tensor) -> np.ndarray:
  """A tensor as numpy in its own dtype (so integer tensors stay visible); floating types
  numpy lacks (bfloat16, float8) are widened to float32."""
  import torch
  if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
    tensor = tensor.float()
  return tensor.numpy()


def _torch_reason(error) -> str:
  """torch's own reason in one line, without its advice to load with weights_only=False."""
  text = str(error)
  if "WeightsUnpickler error:" in text:
    text = text.split("WeightsUnpickler error:", 1)[1]
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  reason = lines[0].split(" Please use", 1)[0] if lines else type(error).__name__
  return reason if len(reason) <= 200 else reason[:197] + "..."


def _read_torch(path):
  """(state dict, stored names, shapes) via torch.load(weights_only=True): no code from the
  pickle runs, and a file torch cannot read is named."""
  try:
    import torch
  except ImportError as error:
    raise CheckpointError(f"reading {path} needs PyTorch: pip install 'ardiffusion_jax[convert]' "
                          "(CPU is enough), or convert the file to .safetensors") from error
  try:
    try:
      state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # old (non-zip) serialisation cannot be memory-mapped
      state = torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as error:  # UnpicklingError, EOFError, RuntimeError, ...: all the file's fault
    raise CheckpointError(f"{path}: torch.load(weights_only=True) could not read it (a truncated "
                          f"download, or not a PyTorch state dict; nothing in it was run): "
                          f"{_torch_reason(error)}") from error
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of named tensors")
  for name, value in state.items():
    if not isinstance(value, torch.Tensor):
      raise CheckpointError(f"{path}: {name!r} is a {type(value).__name__}, not a tensor; is this "
                            "a state dict?")
  return state


def open_state_dict(path, allow_nonfinite: bool = False) -> StateDict:
  """.safetensors, .npz, or .pth/.pt/.bin (needs torch; loaded with
  mmap where the file allows). A `state_dict` entry (Lightning) is unwrapped.
  `allow_nonfinite` lets NaN/inf tensors through (see `StateDict`)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path} not found")
  if path.suffix == ".safetensors":
    shapes, load = _read_safetensors(path)
    stored = list(shapes)
  elif path.suffix == ".npz":
    data = _open_npz(path)
    stored = list(data.files)
    shapes = {name: _npz_array(data, path, name).shape for name in stored}
    load = lambda name: _npz_array(data, path, name)
  else:
    state = _read_torch(path)
    stored = list(state)
    shapes = {name: tuple(state[name].shape) for name in stored}
    load = lambda name: _torch_array(state[name])
  names = {}
  for name in stored:
    key = name.removeprefix("module.")
    if key in names:
      raise CheckpointError(f"{path} holds both {key!r} and 'module.{key}'")
    names[key] = name
  return StateDict(path, {key: shapes[name] for key, name in names.items()}, load, names,
                   allow_nonfinite)


def read_state_dict(path, allow_nonfinite: bool = False) -> dict:
  """A whole state dict as float32 numpy arrays (small files such as LPIPS)."""
  state = open_state_dict(path, allow_nonfinite)
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
  with _open_npz(path) as data:
    flat = {k: _npz_array(data, path, k) for k in data.files}
  try:
    return flax.traverse_util.unflatten_dict(flat, sep="/")
  except (TypeError, ValueError, KeyError, IndexError) as error:  # e.g. both 'a' and 'a/b'
    raise CheckpointError(f"{path} is not a '/'-keyed variables file: {error}") from error
