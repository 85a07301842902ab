"""`ardiff plan`: AOT-compile the real train step on N devices and report memory.

Nothing is allocated: the state and batch are ShapeDtypeStructs with shardings. On
fake CPU devices the argument and output sizes (how the state is sharded) are exact;
temporaries depend on the backend's fusion and are a rough guide for GPU/TPU.
"""

import jax

from ardiffusion_jax.models import dit
from ardiffusion_jax.train import dit as train_dit
from ardiffusion_jax.train import sharding
from ardiffusion_jax.train import state as state_lib

GIB = 1024**3


def plan_train_step(config, devices) -> dict:
  """Compiles the DiT train step for `config` on `devices`; returns per-device bytes."""
  mesh = sharding.make_mesh(config.mesh, devices)
  model = dit.dit_from_config(config.dit)
  tx = state_lib.make_optimizer(config.train)
  abstract_state, shardings = state_lib.abstract_train_state(model, tx, mesh,
                                                             model.example_inputs())
  batch_size = config.train.batch_size
  latents, _, label = model.example_inputs(batch_size)
  batch = {
      "latents": jax.ShapeDtypeStruct(latents.shape, latents.dtype,
                                      sharding=sharding.batch_sharding(mesh, 4)),
      "label": jax.ShapeDtypeStruct(label.shape, label.dtype,
                                    sharding=sharding.batch_sharding(mesh, 1)),
  }
  with sharding.mesh_context(mesh):
    compiled = train_dit.jit_train_step(model, tx, config, shardings, mesh).lower(
        abstract_state, batch).compile()
  memory = compiled.memory_analysis()
  argument = memory.argument_size_in_bytes
  output = memory.output_size_in_bytes
  alias = memory.alias_size_in_bytes
  temp = memory.temp_size_in_bytes
  # Some backends report a peak that leaves out temporaries; take the larger of that and
  # live arguments + outputs (less what is donated) + temporaries.
  peak = max(getattr(memory, "peak_memory_in_bytes", 0) or 0, argument + output - alias + temp)
  params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
  return {
      "devices": len(devices), "mesh": dict(mesh.shape), "platform": devices[0].platform,
      "params": int(params), "global_batch": batch_size,
      "per_device_batch": batch_size // (mesh.shape["data"] * mesh.shape["fsdp"]),
      "argument_bytes": int(argument), "output_bytes": int(output), "alias_bytes": int(alias),
      "temp_bytes": int(temp), "peak_bytes": int(peak),
  }


def format_plan(result: dict) -> str:
  rows = [("parameters", f"{result['params']:,}"), ("mesh", str(result["mesh"])),
          ("batch", f"{result['global_batch']} global, {result['per_device_batch']} per device")]
  for name in ("argument", "output", "alias", "temp", "peak"):
    rows.append((f"{name} per device", f"{result[name + '_bytes'] / GIB:.2f} GiB"))
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
