"""`ardiff convert fid-inception`: pytorch-fid's InceptionV3 state dict -> one .npz.

The input is `pt_inception-2015-12-05-6726825d.pth` (the pytorch-fid release; torchvision
Inception3 names with `num_classes=1008`). Every conv and BatchNorm of `FIDInceptionV3`
is read by name; the unused classifier (`fc.*`) and BatchNorm counters are dropped.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax.convert import open_state_dict
from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.models.inception import FIDInceptionV3

# Our leaf -> (torch suffix, layout change)
_LEAVES = {("params", "conv", "kernel"): ("conv.weight", lambda w: w.transpose(2, 3, 1, 0)),
           ("params", "bn", "scale"): ("bn.weight", None),
           ("params", "bn", "bias"): ("bn.bias", None),
           ("batch_stats", "bn", "mean"): ("bn.running_mean", None),
           ("batch_stats", "bn", "var"): ("bn.running_var", None)}
IGNORED = ("fc.weight", "fc.bias")


def abstract_variables():
  return jax.eval_shape(lambda: FIDInceptionV3().init(jax.random.key(0), jnp.zeros((1, 299, 299, 3))))


def variables_from_state(state) -> dict:
  """Maps a pytorch-fid state dict (a `convert.StateDict`) onto FIDInceptionV3's
  variables; raises CheckpointError naming every missing key and wrong shape."""
  flat, problems, used = {}, [], set()
  for path, leaf in flax.traverse_util.flatten_dict(abstract_variables()).items():
    suffix, layout = _LEAVES[(path[0],) + path[-2:]]
    key = ".".join(path[1:-2] + (suffix,))
    used.add(key)
    if key not in state:
      problems.append(f"missing {key}")
      continue
    value = state[key]
    value = layout(value) if layout else value
    if value.shape != leaf.shape:
      problems.append(f"{key}: shape {state.shape(key)}, expected the layout of {leaf.shape}")
      continue
    flat[path] = value
  unexpected = [k for k in state.keys() if k not in used and k not in IGNORED
                and not k.endswith("num_batches_tracked")]
  problems += [f"unexpected {k}" for k in unexpected]
  if problems:
    raise CheckpointError(f"{state.path} is not pytorch-fid's InceptionV3: " + "; ".join(problems))
  return flax.traverse_util.unflatten_dict(flat)


def convert_fid_inception(input_path, out_path) -> dict:
  variables = variables_from_state(open_state_dict(input_path))
  np.savez(out_path, **flax.traverse_util.flatten_dict(variables, sep="/"))
  return variables


def load_fid_inception(path) -> dict:
  """The .npz `convert_fid_inception` wrote, as FIDInceptionV3 variables."""
  import pathlib
  if not pathlib.Path(path).is_file():
    raise CheckpointError(
        f"FID-img needs the InceptionV3 weights {path}: download pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth (its GitHub release 'fid_weights') and run "
        "`ardiff convert fid-inception --input pt_inception-2015-12-05-6726825d.pth --out "
        f"{path}`")
  with np.load(path) as data:
    return flax.traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")
