"""The device mesh and the one table mapping logical axis names onto it.

Mesh axes are ('data', 'fsdp', 'tensor'), all `AxisType.Auto`. Weights are sharded
along `embed` over `fsdp` (ZeRO-3 style) and along `mlp`/`heads` over `tensor`; the
batch is split over `data` and `fsdp` together.
"""

import contextlib

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ardiffusion_jax.config import MESH_AXES, resolve_mesh_shape

LOGICAL_RULES = (
    # weights
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
)
BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A mesh over `devices` (default: all) shaped by the config's data/fsdp/tensor sizes."""
  devices = jax.devices() if devices is None else list(devices)
  shape = resolve_mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _fit(spec: P, shape, mesh: Mesh) -> P:
  """Drops mesh axes from dims they do not divide (e.g. 4 output channels on fsdp=8)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    fitted.append(axes if names and dim % size == 0 else None)
  return P(*fitted)


def logical_shardings(abstract_tree, mesh: Mesh):
  """NamedShardings for a tree of (possibly boxed) abstract values with logical names.

  Leaves without logical names (plain arrays, constants) are replicated.
  """
  specs = nn.get_partition_spec(abstract_tree)
  mesh_specs = nn.logical_to_mesh(specs, LOGICAL_RULES)
  shapes = nn.meta.unbox(abstract_tree)
  return jax.tree.map(lambda spec, leaf: NamedSharding(mesh, _fit(spec, leaf.shape, mesh)),
                      mesh_specs, shapes, is_leaf=lambda x: isinstance(x, P))


@contextlib.contextmanager
def mesh_context(mesh: Mesh):
  """The mesh and the logical rules, as tracing sharded code needs them."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    yield mesh


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(local_batch, mesh: Mesh):
  """Turns this process's part of a batch (a tree of numpy arrays) into global arrays."""
  def to_global(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
  return jax.tree.map(to_global, local_batch)
