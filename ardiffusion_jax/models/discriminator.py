"""PatchGAN discriminator, hinge losses and the adaptive generator weight, as in the
authors' VAE loss."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ardiffusion_jax.models import layers


class PatchDiscriminator(nn.Module):
  """NLayerDiscriminator: conv4 s2, LeakyReLU(0.2), then n-1 [conv4 s2, BN, LReLU], then
  conv4 s1 + BN + LReLU and a conv4 s1 to one logit per patch. Padding 1, no bias before
  BatchNorm, init N(0, 0.02), BN scale ~ N(1, 0.02)."""
  base_features: int = 64
  num_layers: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = True):
    init = layers.param_with_axes(layers.drawn_as_matrix(nn.initializers.normal(0.02)),
                                  (None, None, None, "embed"))
    conv = lambda features, stride, name, bias: nn.Conv(
        features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)), use_bias=bias,
        kernel_init=init, dtype=self.dtype, name=name)
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name,
        scale_init=lambda key, shape, dtype=jnp.float32: 1.0 + 0.02 * jax.random.normal(key, shape, dtype))
    x = nn.leaky_relu(conv(self.base_features, 2, "conv_0", True)(images), 0.2)
    features = self.base_features
    for i in range(1, self.num_layers + 1):
      features = self.base_features * min(2**i, 8)
      stride = 2 if i < self.num_layers else 1
      x = nn.leaky_relu(norm(f"norm_{i}")(conv(features, stride, f"conv_{i}", False)(x)), 0.2)
    return conv(1, 1, f"conv_{self.num_layers + 1}", True)(x).astype(jnp.float32)


def hinge_discriminator_loss(logits_real, logits_fake):
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def generator_adversarial_loss(logits_fake):
  return -jnp.mean(logits_fake)


def adaptive_weight(nll_grad_last, gan_grad_last, max_weight: float = 1e4):
  """‖∇_last nll‖ / (‖∇_last g‖ + 1e-4), clipped to [0, max_weight] and not
  differentiated; `last` is the decoder's final layer."""
  ratio = jnp.linalg.norm(nll_grad_last) / (jnp.linalg.norm(gan_grad_last) + 1e-4)
  return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, max_weight))
