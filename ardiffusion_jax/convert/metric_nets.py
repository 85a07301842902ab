"""`ardiff convert fid-inception | fid-resnet3d`: the FID networks' PyTorch weights -> .npz.

- fid-inception: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (torchvision
  Inception3 names) -> `FIDInceptionV3` (FID-img).
- fid-resnet3d: Kensho Hara's `resnet-50-kinetics.pth` (`layer1.0.downsample.0.weight`
  -> `layer1_0/downsample_0/kernel`) -> `ResNet3D50` (FID-vid).

Every conv and BatchNorm is read by name (a `module.` prefix is stripped); the unused
classifiers (`fc.*`) and BatchNorm counters are dropped.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from ardiffusion_jax.convert import conv_bn_variables, load_variables, open_state_dict, save_variables
from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.eval.nets.inception import FIDInceptionV3
from ardiffusion_jax.eval.nets.resnet3d import ResNet3D50


def _hara_module(path) -> str:
  # layer1_0 -> layer1.0, downsample_0 -> downsample.0
  return ".".join(part.replace("_", ".") if part.startswith(("layer", "downsample")) else part
                  for part in path)


@dataclasses.dataclass(frozen=True)
class MetricNet:
  metric: str
  model: Callable
  example_shape: tuple
  module_key: Callable
  source: str  # where the user gets the weights, and the command that converts them


NETS = {
    "fid-inception": MetricNet(
        "FID-img", FIDInceptionV3, (1, 299, 299, 3), ".".join,
        "download pytorch-fid's pt_inception-2015-12-05-6726825d.pth (its GitHub release "
        "'fid_weights') and run `ardiff convert fid-inception --input "
        "pt_inception-2015-12-05-6726825d.pth --out {path}`"),
    "fid-resnet3d": MetricNet(
        "FID-vid", ResNet3D50, (1, 16, 112, 112, 3), _hara_module,
        "get resnet-50-kinetics.pth from Kensho Hara's 3D-ResNets-PyTorch (the Kinetics-400 "
        "ResNet-50, shortcut B) and run `ardiff convert fid-resnet3d --input "
        "resnet-50-kinetics.pth --out {path}`"),
}


def _abstract_variables(net: MetricNet) -> dict:
  return jax.eval_shape(lambda: net.model().init(jax.random.key(0), jnp.zeros(net.example_shape)))


def convert_metric_net(kind: str, input_path, out_path, allow_nonfinite: bool = False) -> dict:
  net = NETS[kind]
  variables = conv_bn_variables(open_state_dict(input_path, allow_nonfinite), _abstract_variables(net),
                                net.module_key, ignored=("fc.weight", "fc.bias"))
  save_variables(out_path, variables)
  return variables


def load_metric_net(kind: str, path) -> dict:
  """The .npz `convert_metric_net` wrote; a missing file, or one that holds another
  network's weights (keys or shapes differ from the net's), names what to supply."""
  net = NETS[kind]
  variables = load_variables(path, f"{net.metric} needs the weights {path}: "
                             + net.source.format(path=path))
  from ardiffusion_jax.train.checkpoint import tree_differences
  problems = tree_differences(variables, _abstract_variables(net))
  if problems:
    raise CheckpointError(f"{path} does not hold {net.metric}'s {net.model.__name__} weights "
                          f"({len(problems)} differences: {'; '.join(problems[:4])}"
                          f"{'; ...' if len(problems) > 4 else ''}); " + net.source.format(path=path))
  return variables
