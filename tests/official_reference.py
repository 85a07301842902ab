"""A PyTorch reference of the authors' DiT, AD sampler and AR-VAE, written from their code
(iva-mzsun/AR-Diffusion: dit_model.py, base.py, fifoddim.py, the TiTok_KL modules) for the
conversion tests. Module names follow the
official state dicts, so `state_dict()` has their exact keys.

It is written independently of our Flax modules: PyTorch layouts ([out, in] Linears,
NCHW convs, packed `nn.MultiheadAttention`), the authors' tensor orders (legacy reshape,
per-frame batches in the temporal blocks), and the official buffers computed the LDM way.
"""

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------- DiT (§2.3)

def sincos_1d(num_positions: int, dim: int) -> torch.Tensor:
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.arange(num_positions, dtype=np.float64)[:, None] * omega[None]
  return torch.from_numpy(np.concatenate([np.sin(out), np.cos(out)], axis=1)).float()


class TimestepEmbedder(nn.Module):
  def __init__(self, hidden):
    super().__init__()
    self.mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

  def forward(self, t):
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t[..., None].float() * freqs
    return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Attention(nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x, mask):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
    return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU(approximate="tanh")
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


def _ln(x):
  return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class ShareNormBlock(nn.Module):
  def __init__(self, dim, heads, context_tokens):
    super().__init__()
    self.attn = Attention(dim, heads)
    self.mlp = Mlp(dim, 4 * dim)
    self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
    self.c = context_tokens

  def forward(self, x, t_emb, mask):
    b, _, d = x.shape
    frames = t_emb.shape[1]
    mods = self.adaLN_modulation(t_emb).chunk(6, dim=-1)  # each [B, T, D]

    def video(tokens):
      return tokens[:, self.c:].reshape(b, frames, -1, d)

    def join(context, vid):
      return torch.cat([context, vid.reshape(b, -1, d)], dim=1)

    x = _ln(x)
    h = join(x[:, :self.c], video(x) * (1 + mods[1][:, :, None]) + mods[0][:, :, None])
    a = self.attn(h, mask)
    x = x + join(a[:, :self.c], mods[2][:, :, None] * video(a))
    x = _ln(x)
    h = join(x[:, :self.c], video(x) * (1 + mods[4][:, :, None]) + mods[3][:, :, None])
    m = self.mlp(h)
    return x + join(m[:, :self.c], mods[5][:, :, None] * video(m))


class DiTCrossattn(nn.Module):
  """`DiT_crossattn` with share_norm and the video_temporal_causal mask."""

  def __init__(self, hidden, depth, heads, num_frames, tokens, channels, context_tokens=77,
               context_dim=768):
    super().__init__()
    self.frames, self.tokens, self.context_tokens = num_frames, tokens, context_tokens
    self.x_embedder = nn.Linear(channels, hidden)
    self.t_embedder = TimestepEmbedder(hidden)
    self.c_embedder = nn.Linear(context_dim, hidden)
    self.register_buffer("pos_embed", sincos_1d(num_frames * tokens, hidden)[None])
    self.blocks = nn.ModuleList(ShareNormBlock(hidden, heads, context_tokens) for _ in range(depth))
    self.final_layer = nn.Sequential(nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6),
                                     nn.Linear(hidden, channels))

  def mask(self):
    frame = torch.arange(self.frames).repeat_interleave(self.tokens)
    video = torch.where(frame[None, :] > frame[:, None], float("-inf"), 0.0)
    total = self.context_tokens + video.shape[0]
    mask = torch.zeros(total, total)
    mask[self.context_tokens:, self.context_tokens:] = video  # context rows: all 0 (the leak)
    return mask

  def forward(self, x, t, context):
    b, frames, tokens, channels = x.shape
    h = self.x_embedder(x).reshape(b, frames * tokens, -1) + self.pos_embed
    h = torch.cat([self.c_embedder(context), h], dim=1)
    t_emb = self.t_embedder(t)
    for block in self.blocks:
      h = block(h, t_emb, self.mask())
    return self.final_layer(h[:, self.context_tokens:]).reshape(b, frames, tokens, channels)


def ldm_buffers(num_timesteps=1000, start=1e-4, end=0.02) -> dict:
  """LatentDiffusion's registered buffers (float64 numpy, stored as float32)."""
  betas = np.linspace(start ** 0.5, end ** 0.5, num_timesteps, dtype=np.float64) ** 2
  alphas_cumprod = np.cumprod(1.0 - betas)
  prev = np.append(1.0, alphas_cumprod[:-1])
  posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
  values = dict(
      betas=betas, alphas_cumprod=alphas_cumprod, alphas_cumprod_prev=prev,
      sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
      sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
      log_one_minus_alphas_cumprod=np.log(1.0 - alphas_cumprod),
      sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
      sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1),
      posterior_variance=posterior_variance,
      posterior_log_variance_clipped=np.log(np.maximum(posterior_variance, 1e-20)),
      posterior_mean_coef1=betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
      posterior_mean_coef2=(1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
      logvar=np.zeros(num_timesteps))
  return {key: torch.from_numpy(value).float() for key, value in values.items()}


class LatentDiffusion(nn.Module):
  def __init__(self, model):
    super().__init__()
    self.model = model
    for key, value in ldm_buffers().items():
      self.register_buffer(key, value)


class BaseModel(nn.Module):
  """The checkpointed object: `context_emb` or `class_emb` plus `diffusion_model`."""

  def __init__(self, dit, num_classes=0):
    super().__init__()
    self.diffusion_model = LatentDiffusion(dit)
    shape = (dit.context_tokens, dit.c_embedder.in_features)
    if num_classes:
      self.class_emb = nn.Parameter(torch.randn(num_classes + 1, *shape) * 0.1)
    else:
      self.context_emb = nn.Parameter(torch.randn(*shape) * 0.1)

  def contexts(self, batch, label=None):
    """(conditional, unconditional) context tokens as `BaseModel.sample` builds them
    (their base.py): class_emb[label] against class_emb[0], or context_emb against zeros."""
    if hasattr(self, "class_emb"):
      return self.class_emb[label], self.class_emb[0].expand(batch, -1, -1)
    context = self.context_emb[None].expand(batch, -1, -1)
    return context, torch.zeros_like(context)

  def forward(self, x, t, label=None):
    return self.diffusion_model.model(x, t, self.contexts(x.shape[0], label)[0])


# --------------------------------------------------------------- the AD sampler (§3.2-3.4)

def ddim_schedule(alphas_cumprod, num_steps):
  """`make_ddim_timesteps` ('uniform', +1) and the authors' `make_ddim_sampling_parameters`
  (η = 0), which append ᾱ_{T-1} to both tables for frames not yet started."""
  num_timesteps = alphas_cumprod.shape[0]
  ddim_timesteps = np.arange(0, num_timesteps, num_timesteps // num_steps) + 1
  alphacums = alphas_cumprod.cpu()  # their float32 buffer, read back as python floats
  alphas = np.asarray(alphacums[ddim_timesteps].tolist() + [alphacums[-1].item()])
  alphas_prev = np.asarray([alphacums[0].item()] + alphacums[ddim_timesteps[:-1]].tolist()
                           + [alphacums[-1].item()])
  return ddim_timesteps, alphas, alphas_prev


def timestep_matrix(total_frames, window, ar_step, template):
  """`generate_timestep_matrix`, row by row as their loop builds it: each row, frame 0 and
  any frame whose predecessor had finished advance one step, every other frame trails its
  predecessor by `ar_step`; then the window [end - window, end) moves one frame whenever
  the frame at its end is due to move in that row."""
  num_steps = len(template)
  step_template = torch.tensor(np.concatenate([[999], template]), dtype=torch.long)
  previous = torch.zeros(total_frames, dtype=torch.long)
  matrix, index, update = [], [], []
  while not torch.all(previous == num_steps):
    row = torch.zeros(total_frames, dtype=torch.long)
    for i in range(total_frames):
      if i == 0 or previous[i - 1] == num_steps:
        row[i] = previous[i] + 1
      else:
        row[i] = row[i - 1] - ar_step
    row = row.clamp(0, num_steps)
    update.append(row != previous)
    index.append(row)
    matrix.append(step_template[row])
    previous = row
  intervals, end = [], window
  for mask in update:
    if end < total_frames and mask[end]:
      end += 1
    intervals.append((end - window, end))
  return torch.stack(matrix), torch.stack(index), torch.stack(update), intervals


@torch.no_grad()
def ad_sample(model, x_T, num_steps, ar_step, guidance=1.0, label=None, keep_idle=True):
  """`fifoddim.DDIMSampler.sample` as `BaseModel.sample` calls it (η = 0, x0-prediction):
  the window's frames go through the DiT (with CFG as one [uncond; cond] batch, guided in
  x0 space), frames not due an update get x̂0 := x_t, ε̂ comes from the model's schedule at
  the fed t, and x_prev = sqrt(a_prev) x̂0 + sqrt(1 - a_prev) ε̂.

  Their update still moves a finished, idle frame by a factor of about 1 + 2e-5 a row
  (docs/porting.md); `keep_idle=True` leaves such frames as they are, the one place our port
  departs from their code on purpose. `keep_idle=False` is their code verbatim."""
  dit, ldm = model.diffusion_model.model, model.diffusion_model
  batch, total_frames = x_T.shape[:2]
  ddim_timesteps, _, alphas_prev = ddim_schedule(ldm.alphas_cumprod, num_steps)
  matrix, index_rows, update, intervals = timestep_matrix(
      total_frames, dit.frames, ar_step, np.flip(ddim_timesteps))
  cond, uncond = model.contexts(batch, label)
  img = x_T.clone()
  for r, (start, end) in enumerate(intervals):
    x = img[:, start:end]
    t = matrix[r, start:end][None].expand(batch, -1)
    moves = update[r, start:end][None, :, None, None].to(x.dtype)
    if guidance == 1.0:
      x0 = dit(x, t, cond)
    else:
      x0_uncond, x0_cond = dit(torch.cat([x, x]), torch.cat([t, t]),
                               torch.cat([uncond, cond])).chunk(2)
      x0 = x0_uncond + guidance * (x0_cond - x0_uncond)
    x0 = x0 * moves + x * (1 - moves)
    per_frame = lambda table: table[t][..., None, None]
    eps = ((per_frame(ldm.sqrt_recip_alphas_cumprod) * x - x0)
           / per_frame(ldm.sqrt_recipm1_alphas_cumprod))
    k = num_steps - index_rows[r, start:end]
    a_prev = torch.tensor(alphas_prev[k], dtype=x.dtype)[None, :, None, None]
    x_prev = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
    if keep_idle:
      x_prev = x_prev * moves + x * (1 - moves)
    img[:, start:end] = x_prev
  return img


# -------------------------------------------------------------------------- AR-VAE (§1)

class ResidualAttentionBlock(nn.Module):
  """TiTok's pre-LN block; mlp_ratio <= 0 makes it attention only (the fine temporal block)."""

  def __init__(self, width, heads, mlp_ratio=4.0):
    super().__init__()
    self.ln_1 = nn.LayerNorm(width)
    self.attn = nn.MultiheadAttention(width, heads)
    if mlp_ratio > 0:
      self.ln_2 = nn.LayerNorm(width)
      hidden = int(width * mlp_ratio)
      self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()),
                                            ("c_proj", nn.Linear(hidden, width))]))
    self.mlp_ratio = mlp_ratio

  def forward(self, x, attn_mask=None):  # x [L, N, D] (sequence first, as TiTok)
    h = self.ln_1(x)
    x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    if self.mlp_ratio > 0:
      x = x + self.mlp(self.ln_2(x))
    return x


class CrossAttentionBlock(nn.Module):
  def __init__(self, width, heads):
    super().__init__()
    self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
    self.attn = nn.MultiheadAttention(width, heads)

  def forward(self, q, kv, attn_mask):  # sequence first
    return q + self.attn(self.ln_q(q), self.ln_k(kv), self.ln_v(kv), need_weights=False,
                         attn_mask=attn_mask)[0]


class TiTokEncoder(nn.Module):
  def __init__(self, width, depth, heads, image_size, patch, tokens, token_dim):
    super().__init__()
    grid = image_size // patch
    scale = width ** -0.5
    self.patch_embed = nn.Conv2d(3, width, patch, stride=patch, bias=True)
    self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
    self.positional_embedding = nn.Parameter(scale * torch.randn(grid ** 2 + 1, width))
    self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(tokens, width))
    self.ln_pre = nn.LayerNorm(width)
    self.transformer = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(depth))
    self.ln_post = nn.LayerNorm(width)
    self.conv_out = nn.Conv2d(width, 2 * token_dim, 1, bias=True)
    self.tokens = tokens

  def forward(self, images, latent_tokens):  # images [N, 3, H, W]
    n = images.shape[0]
    x = self.patch_embed(images)
    x = x.reshape(n, x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([self.class_embedding.expand(n, 1, -1), x], dim=1) + self.positional_embedding
    latent = (latent_tokens + self.latent_token_positional_embedding).expand(n, -1, -1)
    x = self.ln_pre(torch.cat([x, latent], dim=1)).permute(1, 0, 2)
    for block in self.transformer:
      x = block(x)
    x = self.ln_post(x.permute(1, 0, 2)[:, -self.tokens:])
    x = x.reshape(n, x.shape[2], self.tokens, 1)  # the legacy reshape (no transpose)
    return self.conv_out(x).reshape(n, -1, 1, self.tokens)  # moments [N, 2C, 1, L]


class TiTokDecoder(nn.Module):
  def __init__(self, width, depth, heads, grid, tokens, token_dim, codebook, temporal_frames=0):
    super().__init__()
    scale = width ** -0.5
    self.decoder_embed = nn.Linear(token_dim, width)
    self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
    self.positional_embedding = nn.Parameter(scale * torch.randn(grid ** 2 + 1, width))
    self.mask_token = nn.Parameter(scale * torch.randn(1, 1, width))
    self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(tokens, width))
    self.ln_pre = nn.LayerNorm(width)
    self.transformer = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(depth))
    self.ln_post = nn.LayerNorm(width)
    self.ffn = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.Tanh(), nn.Conv2d(2 * width, codebook, 1))
    self.grid, self.tokens, self.heads, self.frames = grid, tokens, heads, temporal_frames
    if temporal_frames:
      self.fine_temporal_blocks = nn.ModuleList(
          ResidualAttentionBlock(width, heads, mlp_ratio=-1) for _ in range(depth))
      self.coarse_temporal_blocks = nn.ModuleList(CrossAttentionBlock(width, heads) for _ in range(depth))

  def _temporal(self, i, x):
    """The two causal blocks of layer i on x [L, (b t), D] (TiTok_KL_wT's order)."""
    t = self.frames
    pixels_n = self.grid ** 2
    n, width = x.shape[1], x.shape[2]
    b = n // t
    cls, pixels, latents = x[:1], x[1:1 + pixels_n], x[1 + pixels_n:]
    # Fine: per pixel position, a sequence over time; True = blocked.
    seq = pixels.reshape(pixels_n, b, t, width).permute(2, 1, 0, 3).reshape(t, b * pixels_n, width)
    fine_mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    seq = self.fine_temporal_blocks[i](seq, attn_mask=fine_mask)
    pixels = seq.reshape(t, b, pixels_n, width).permute(2, 1, 0, 3).reshape(pixels_n, n, width)
    # Coarse: per frame, [latents; pixels] over all frames' latents, blocked when later.
    query = torch.cat([latents, pixels], dim=0)  # [288, (b t), D]
    context = latents.reshape(self.tokens, b, t, width).permute(2, 0, 1, 3).reshape(t * self.tokens, b, width)
    context = context[:, :, None].expand(-1, -1, t, -1).reshape(t * self.tokens, n, width)
    frame_of_key = torch.arange(t).repeat_interleave(self.tokens)
    blocked = frame_of_key[None, :] > torch.arange(t)[:, None]  # [t, t·L]
    mask = blocked[:, None, :].expand(-1, query.shape[0], -1)  # [t, 288, t·L]
    mask = mask[None].expand(b, -1, -1, -1).reshape(n, 1, query.shape[0], -1)
    mask = mask.expand(-1, self.heads, -1, -1).reshape(n * self.heads, query.shape[0], -1)
    query = self.coarse_temporal_blocks[i](query, context, attn_mask=mask)
    return torch.cat([cls, query[self.tokens:], query[:self.tokens]], dim=0)

  def forward(self, z):  # z [N, C, 1, L], unit-norm over C
    n = z.shape[0]
    latent = self.decoder_embed(z.reshape(n, z.shape[1], -1).permute(0, 2, 1))
    latent = latent + self.latent_token_positional_embedding
    pixels = self.mask_token.expand(n, self.grid ** 2, -1)
    x = torch.cat([self.class_embedding.expand(n, 1, -1), pixels], dim=1) + self.positional_embedding
    x = self.ln_pre(torch.cat([x, latent], dim=1)).permute(1, 0, 2)
    for i, block in enumerate(self.transformer):
      if self.frames:
        x = self._temporal(i, x)
      x = block(x)
    x = self.ln_post(x.permute(1, 0, 2)[:, 1:1 + self.grid ** 2])
    x = x.permute(0, 2, 1).reshape(n, -1, self.grid, self.grid)
    return self.ffn(x)


class ResnetBlock(nn.Module):
  def __init__(self, cin, cout, groups):
    super().__init__()
    self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
    self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
    if cin != cout:
      self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False)
    self.changes = cin != cout

  def forward(self, x):
    h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
    return h + self.nin_shortcut(h) if self.changes else x + h  # the authors' quirk


class UpStage(nn.Module):
  def __init__(self, cin, cout, groups, upsample):
    super().__init__()
    self.block = nn.ModuleList([ResnetBlock(cin, cout, groups), ResnetBlock(cout, cout, groups)])
    if upsample:
      self.upsample_conv = nn.Conv2d(cout, cout, 3, padding=1)
    self.upsample = upsample


class PixelDecoder(nn.Module):
  """MaskGIT-VQGAN decoder: up stages run last to first."""

  def __init__(self, hidden, channel_mult, z_channels, groups):
    super().__init__()
    top = hidden * channel_mult[-1]
    self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
    self.mid = nn.ModuleList([ResnetBlock(top, top, groups), ResnetBlock(top, top, groups)])
    self.up = nn.ModuleList()
    channels = [hidden * m for m in channel_mult]
    stages = [None] * len(channel_mult)
    cin = top
    for k in reversed(range(len(channel_mult))):
      stages[k] = UpStage(cin, channels[k], groups, upsample=k > 0)
      cin = channels[k]
    self.up.extend(stages)
    self.norm_out = nn.GroupNorm(groups, channels[0], eps=1e-6)
    self.conv_out = nn.Conv2d(channels[0], 3, 3, padding=1)

  def forward(self, z):
    h = self.conv_in(z)
    for block in self.mid:
      h = block(h)
    for k in reversed(range(len(self.up))):
      for block in self.up[k].block:
        h = block(h)
      if self.up[k].upsample:
        h = self.up[k].upsample_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return self.conv_out(F.silu(self.norm_out(h)))


class TiTokKL(nn.Module):
  """TiTok_KL (temporal_frames=0) or TiTok_KL_wT."""

  def __init__(self, width, depth, heads, image_size, patch, tokens=32, token_dim=4,
               pixel_hidden=32, channel_mult=(1, 1, 2, 2), z_channels=32, codebook=64,
               groups=8, temporal_frames=0):
    super().__init__()
    self.latent_tokens = nn.Parameter(width ** -0.5 * torch.randn(tokens, width))
    self.encoder = TiTokEncoder(width, depth, heads, image_size, patch, tokens, token_dim)
    self.decoder = TiTokDecoder(width, depth, heads, image_size // patch, tokens, token_dim,
                                codebook, temporal_frames)
    self.pixel_quantize_conv = nn.Conv2d(codebook, z_channels, 1)
    self.pixel_decoder = PixelDecoder(pixel_hidden, channel_mult, z_channels, groups)
    self.token_dim = token_dim

  def forward(self, images):
    """images [N, 3, H, W] in [0, 1] -> (reconstruction [N, 3, H, W], raw mean [N, C, 1, L])."""
    moments = self.encoder(images, self.latent_tokens)
    mean = moments[:, :self.token_dim]
    logits = self.decoder(F.normalize(mean, dim=1))
    soft = self.pixel_quantize_conv(torch.softmax(logits, dim=1))
    return self.pixel_decoder(soft), mean


def randomize(module: nn.Module, seed: int = 0, scale: float = 0.1):
  """Every parameter random, so no zero-initialised branch hides a mapping error; norm
  scales stay near 1."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for owner in module.modules():
      is_norm = isinstance(owner, (nn.LayerNorm, nn.GroupNorm))
      for name, param in owner.named_parameters(recurse=False):
        noise = torch.randn(param.shape, generator=generator) * scale
        param.copy_(1 + noise if is_norm and name == "weight" else noise)
  return module


def numpy_state(module: nn.Module, prefix: str = "") -> dict:
  return {prefix + key: value.detach().numpy().copy() for key, value in module.state_dict().items()}


# ------------------------------------------------------- FID InceptionV3 (metrics §2.4)

class BasicConv2d(nn.Module):
  def __init__(self, cin, cout, **kwargs):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _pool_valid(x):
  return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
    self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
    self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

  def forward(self, x):
    return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      self.branch_pool(_pool_valid(x))], 1)


class InceptionB(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

  def forward(self, x):
    return torch.cat([self.branch3x3(x),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionC(nn.Module):
  def __init__(self, cin, c7):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

  def forward(self, x):
    b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    c = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
      c = layer(c)
    return torch.cat([self.branch1x1(x), b, c, self.branch_pool(_pool_valid(x))], 1)


class InceptionD(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

  def forward(self, x):
    b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionE(nn.Module):
  def __init__(self, cin, max_pool):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
    self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
    self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)
    self.max_pool = max_pool

  def forward(self, x):
    b = self.branch3x3_1(x)
    b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
    c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
    pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _pool_valid(x)
    return torch.cat([self.branch1x1(x), b, c, self.branch_pool(pooled)], 1)


class FIDInception3(nn.Module):
  """torchvision's Inception3 (num_classes=1008, no aux logits) with pytorch-fid's blocks."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
    self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (FIDInceptionA(192, 32), FIDInceptionA(256, 64),
                                                   FIDInceptionA(288, 64))
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b, self.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
    self.Mixed_6d, self.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b, self.Mixed_7c = FIDInceptionE(1280, False), FIDInceptionE(2048, True)
    self.fc = nn.Linear(2048, 1008)

  def forward(self, x):  # NCHW, already scaled; returns pool3 [N, 2048]
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
    x = F.max_pool2d(x, 3, stride=2)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                 "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
      x = getattr(self, name)(x)
    return x.mean(dim=(2, 3))


# ----------------------------------------- FID-vid's 3D ResNet-50 (metrics §2.3, Hara's)

class Bottleneck3D(nn.Module):
  def __init__(self, cin, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv3d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm3d(planes)
    self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm3d(planes)
    self.conv3 = nn.Conv3d(planes, 4 * planes, 1, bias=False)
    self.bn3 = nn.BatchNorm3d(4 * planes)
    self.downsample = (nn.Sequential(nn.Conv3d(cin, 4 * planes, 1, stride=stride, bias=False),
                                     nn.BatchNorm3d(4 * planes)) if downsample else None)

  def forward(self, x):
    h = F.relu(self.bn1(self.conv1(x)))
    h = F.relu(self.bn2(self.conv2(h)))
    h = self.bn3(self.conv3(h))
    return F.relu(h + (self.downsample(x) if self.downsample is not None else x))


class ResNet3D50(nn.Module):
  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
    self.bn1 = nn.BatchNorm3d(64)
    cin = 64
    for index, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
      layers = []
      for block in range(blocks):
        stride = 2 if index > 0 and block == 0 else 1
        layers.append(Bottleneck3D(cin, planes, stride, block == 0))
        cin = 4 * planes
      setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
    self.fc = nn.Linear(2048, 400)

  def forward(self, x):  # NCTHW -> pooled [N, 2048]
    x = F.max_pool3d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
    for index in range(4):
      x = getattr(self, f"layer{index + 1}")(x)
    return x.mean(dim=(2, 3, 4))
