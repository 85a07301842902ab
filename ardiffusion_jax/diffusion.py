"""Gaussian diffusion math with one timestep per frame.

Schedules are computed in float64 numpy once and handed to jitted code as constants.
Timesteps are integers in [0, T-1]; `t` has shape [B, F] and broadcasts over the
trailing latent axes, so every frame of a video can sit at its own noise level.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("scaled_linear", "linear", "cosine")
# What a denoiser outputs: the clean latents (the method's), the noise, or v.
PARAMETERIZATIONS = ("x0", "eps", "v")


def beta_schedule(name: str, num_timesteps: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> np.ndarray:
  """Returns float64 betas [T].

  `scaled_linear` is what the authors call "linear" (the LDM schedule): betas are
  linear in sqrt space. `linear` is DDPM's. `cosine` is Nichol & Dhariwal's with
  s = 0.008 and betas clipped at 0.999 (`beta_start`/`beta_end` are unused there).
  """
  if num_timesteps < 1:
    raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
  if name == "scaled_linear":
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64)**2
  if name == "linear":
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
  if name == "cosine":
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + 0.008) / 1.008 * np.pi / 2)**2
    return np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
  raise ValueError(f"unknown beta schedule {name!r}; expected one of {BETA_SCHEDULES}")


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
  """ᾱ_t = prod_{s<=t} (1 - β_s), float64 [T]."""
  return np.cumprod(1.0 - np.asarray(betas, np.float64))


def per_frame(coef, t, ndim: int):
  """Gathers coef[t] for t [B, F] and appends singleton axes up to `ndim`."""
  values = jnp.asarray(coef, jnp.float32)[t]
  return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def q_sample(x0, t, noise, alphas_cumprod):
  """x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε with t [B, F] and x0 [B, F, ...]."""
  a = per_frame(alphas_cumprod, t, x0.ndim)
  return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


# Conversions between the three parameterisations. `alpha` is ᾱ_t already broadcast to
# the shape of x_t (use `per_frame` or pass a scalar).
def eps_from_x0(x_t, x0, alpha):
  return (x_t - jnp.sqrt(alpha) * x0) / jnp.sqrt(1.0 - alpha)


def x0_from_eps(x_t, eps, alpha):
  return (x_t - jnp.sqrt(1.0 - alpha) * eps) / jnp.sqrt(alpha)


def v_from_x0_eps(x0, eps, alpha):
  return jnp.sqrt(alpha) * eps - jnp.sqrt(1.0 - alpha) * x0


def x0_from_v(x_t, v, alpha):
  return jnp.sqrt(alpha) * x_t - jnp.sqrt(1.0 - alpha) * v


def eps_from_v(x_t, v, alpha):
  return jnp.sqrt(1.0 - alpha) * x_t + jnp.sqrt(alpha) * v


def unknown_parameterization(parameterization: str) -> ValueError:
  """The error for a parameterization outside PARAMETERIZATIONS."""
  return ValueError(f"unknown parameterization {parameterization!r}; expected one of "
                    f"{PARAMETERIZATIONS}")


def prediction_to_x0(prediction, x_t, alpha, parameterization: str):
  """Turns a model output in `parameterization` ('x0', 'eps' or 'v') into x̂0."""
  if parameterization == "x0":
    return prediction
  if parameterization == "eps":
    return x0_from_eps(x_t, prediction, alpha)
  if parameterization == "v":
    return x0_from_v(x_t, prediction, alpha)
  raise unknown_parameterization(parameterization)


def training_target(x0, noise, alpha, parameterization: str):
  """The regression target for `parameterization` ('x0', 'eps' or 'v')."""
  if parameterization == "x0":
    return x0
  if parameterization == "eps":
    return noise
  if parameterization == "v":
    return v_from_x0_eps(x0, noise, alpha)
  raise unknown_parameterization(parameterization)


def ddim_update(x_t, x0_pred, alpha_t, alpha_prev, eta: float = 0.0, noise=None):
  """One DDIM step from level ᾱ_t to ᾱ_prev given the predicted x̂0.

  ε̂ = (x_t - sqrt(ᾱ_t) x̂0) / sqrt(1 - ᾱ_t);  σ = η·sqrt((1-ᾱ_prev)/(1-ᾱ_t))·sqrt(1-ᾱ_t/ᾱ_prev);
  x_prev = sqrt(ᾱ_prev) x̂0 + sqrt(1 - ᾱ_prev - σ²) ε̂ + σ z.
  When ᾱ_t == ᾱ_prev the step is the identity, which is how not-started frames stay put.
  """
  eps = eps_from_x0(x_t, x0_pred, alpha_t)
  x_prev = jnp.sqrt(alpha_prev) * x0_pred
  if eta == 0.0:
    return x_prev + jnp.sqrt(1.0 - alpha_prev) * eps
  if noise is None:
    raise ValueError("ddim_update with eta > 0 needs `noise`")
  sigma = eta * jnp.sqrt((1.0 - alpha_prev) / (1.0 - alpha_t)) * jnp.sqrt(1.0 - alpha_t / alpha_prev)
  return x_prev + jnp.sqrt(jnp.maximum(1.0 - alpha_prev - sigma**2, 0.0)) * eps + sigma * noise


def alphas_from_config(diffusion_config) -> np.ndarray:
  """ᾱ_t for a config's `diffusion` section (float64 numpy)."""
  betas = beta_schedule(diffusion_config.beta_schedule, diffusion_config.num_timesteps,
                        diffusion_config.beta_start, diffusion_config.beta_end)
  return alphas_cumprod(betas)


def loss_weights(alphas_cumprod: np.ndarray, parameterization: str, snr_clip=()):
  """Per-timestep weights [T] of the training MSE, or None for the unweighted loss.

  `snr_clip = (lo, hi)` weighs the x̂0 error at level t by clip(SNR_t, lo, hi), SNR_t =
  ᾱ_t / (1 − ᾱ_t): (1, ∞) is Salimans & Ho's truncated SNR, (0, γ) Min-SNR-γ. The
  unweighted x0 loss spends its gradient where the x̂0 error is large, at high noise;
  the range above 1 lifts the low-noise levels, whose x̂0 errors are small but decide
  positions and edges, and a floor of 1 keeps the high-noise levels' weight from
  vanishing as Min-SNR's does (SNR_999 ≈ 0.005 on scaled_linear). The weights are
  written for the parameterization's own target (its MSE is SNR_t times the x̂0 error
  for eps, 1 + SNR_t times for v) and scaled so the x̂0 weights average 1 over t.
  """
  if not snr_clip:
    return None
  lo, hi = snr_clip
  snr = alphas_cumprod / (1.0 - alphas_cumprod)
  x0_weights = np.clip(snr, lo, hi)
  own_scale = {"x0": np.ones_like(snr), "eps": snr, "v": 1.0 + snr}[parameterization]
  return (x0_weights / own_scale / x0_weights.mean()).astype(np.float32)


class DDIMGrid(NamedTuple):
  """A DDIM grid indexed by k, the number of steps a frame has completed after a row.

  This is the indexing of the AD step matrix (`timesteps.ad_step_matrix`): a frame whose
  entry is k in some row is fed `model_timesteps[k]` and, when its update mask is set,
  moves from `alphas[k]` to `alphas_prev[k]`. k = 0 means not started (pure noise, the
  update is the identity) and k = S means finished. A finished frame that is no longer
  updated, or a context frame, is fed `context_timestep`.
  """
  model_timesteps: np.ndarray  # int32 [S+1]
  alphas: np.ndarray  # float64 [S+1]
  alphas_prev: np.ndarray  # float64 [S+1]
  context_timestep: int

  @property
  def num_steps(self) -> int:
    return len(self.model_timesteps) - 1

  def timesteps_for(self, step_index: np.ndarray, update_mask: np.ndarray) -> np.ndarray:
    """Model timesteps for a block of AD rows: frames neither updated nor unfinished
    are finished (or context) and get `context_timestep`."""
    step_index = np.asarray(step_index)
    finished = (step_index == self.num_steps) & ~np.asarray(update_mask)
    return np.where(finished, self.context_timestep, self.model_timesteps[step_index])


def _check_steps(num_steps: int, num_timesteps: int):
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")


def official_ddim_grid(alphas_cumprod: np.ndarray, num_steps: int = 50) -> DDIMGrid:
  """The authors' grid: ddim timesteps [1, 1+c, ..., 1+(S-1)c] with c = T // S, ᾱ_{T-1}
  appended for not-started frames, and ᾱ_0 as the final level, as the authors'
  `fifoddim.py` sampler builds it (docs/architecture.md, "Diffusion math").

  Their code silently produces more than S levels when S does not divide T; we refuse.
  """
  alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
  num_timesteps = len(alphas_cumprod)
  _check_steps(num_steps, num_timesteps)
  if num_timesteps % num_steps:
    raise ValueError(
        f"the official DDIM grid needs num_steps to divide T={num_timesteps}, got "
        f"{num_steps} (their range(0, T, T // S) would give "
        f"{len(range(0, num_timesteps, num_timesteps // num_steps))} levels, not {num_steps})")
  ddim_timesteps = np.arange(0, num_timesteps, num_timesteps // num_steps) + 1
  ddim_alphas = np.append(alphas_cumprod[ddim_timesteps], alphas_cumprod[-1])
  ddim_alphas_prev = np.concatenate(
      [alphas_cumprod[:1], alphas_cumprod[ddim_timesteps[:-1]], alphas_cumprod[-1:]])
  step_template = np.concatenate([[num_timesteps - 1], ddim_timesteps[::-1]])
  return DDIMGrid(
      model_timesteps=step_template.astype(np.int32),
      alphas=ddim_alphas[::-1].copy(),
      alphas_prev=ddim_alphas_prev[::-1].copy(),
      context_timestep=int(step_template[-1]))


def clean_ddim_grid(alphas_cumprod: np.ndarray, num_steps: int = 50) -> DDIMGrid:
  """A DDIM grid with "trailing" spacing: S distinct levels from T-1 down, the last
  step landing on x̂0 itself (ᾱ = 1), finished frames fed t = 0. Works for any S <= T."""
  alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
  num_timesteps = len(alphas_cumprod)
  _check_steps(num_steps, num_timesteps)
  levels = np.round(num_timesteps - np.arange(num_steps) * (num_timesteps / num_steps))
  levels = levels.astype(np.int64) - 1
  level_alphas = np.append(alphas_cumprod[levels], 1.0)
  return DDIMGrid(
      model_timesteps=np.concatenate([levels[:1], levels]).astype(np.int32),
      alphas=np.concatenate([level_alphas[:1], level_alphas[:-1]]),
      alphas_prev=np.concatenate([level_alphas[:1], level_alphas[1:]]),
      context_timestep=0)


def ddim_grid(kind: str, alphas_cumprod: np.ndarray, num_steps: int = 50) -> DDIMGrid:
  """`kind` is 'official' (the authors' grid) or 'clean'."""
  if kind == "official":
    return official_ddim_grid(alphas_cumprod, num_steps)
  if kind == "clean":
    return clean_ddim_grid(alphas_cumprod, num_steps)
  raise ValueError(f"unknown DDIM grid {kind!r}; expected 'official' or 'clean'")
