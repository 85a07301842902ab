"""A local stand-in for the Hugging Face Hub, for tests and the sample notebook's smoke run.

It speaks enough of the Hub's HTTP protocol for the real `huggingface_hub` to download
from it: `HEAD`/`GET {endpoint}/{repo}/resolve/{revision}/{path}` with the headers
`hf_hub_download` needs (ETag, X-Repo-Commit, Content-Length; Range requests answered
with 206), the error codes it maps to exceptions (X-Error-Code RepoNotFound,
RevisionNotFound, EntryNotFound) and `GET {endpoint}/api/models/{repo}/tree/{revision}`
(the file list behind `list_repo_files`). So the client, its cache and its error handling
are the real ones, and every request is logged for the tests to count.

`serve_released(dataset)` serves tiny random official DiT and AR-VAE weights
(tests/official_reference.py) under file names modelled on the authors' experiment
folders; the real hub names are unverified (see ardiffusion_jax/convert/hub.py).
"""

import hashlib
import http.server
import io
import json
import threading
from urllib.parse import unquote, urlsplit

from ardiffusion_jax.convert import hub

COMMIT = "5e1f0c2d3b4a59687a6b5c4d3e2f10a9b8c7d6e5"  # what the fake's main branch resolves to
# `ardiff convert` flags for the tiny models below (sizes the tensor shapes cannot tell).
CONVERT_ARGS = {
    "official-dit": ["--config", "configs/synthetic.py:smoke", "--num-heads", "2"],
    "official-vae": ["--config", "configs/synthetic.py:smoke", "--num-heads", "2",
                     "--norm-groups", "8"],
    "titok-init": ["--config", "configs/synthetic.py:smoke", "--num-heads", "2",
                   "--norm-groups", "8"],
}


class FakeHub:
  """Serves {repo_id: {path: bytes}} on 127.0.0.1 at `url` (use as HF_ENDPOINT).
  `revisions` are the branch/tag names served besides COMMIT; a path put in `cut_next_get`
  has its next GET stop halfway, as a dropped connection would."""

  def __init__(self, repos: dict, revisions=("main",)):
    self.repos = repos
    self.revisions = set(revisions) | {COMMIT}
    self.requests = []  # (method, path, Range header)
    self.cut_next_get = set()
    self._lock = threading.Lock()
    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self._server.server_address[1]}"

  def start(self) -> "FakeHub":
    self._thread.start()
    return self

  def close(self):
    self._server.shutdown()
    self._server.server_close()

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.close()

  def count(self, method, path=None) -> int:
    """Requests of `method` so far, for one file `path` (its repo-relative path) or all."""
    with self._lock:
      return sum(1 for m, p, _ in self.requests if m == method and (path is None or p == path))

  def log(self, method, path, range_header):
    with self._lock:
      self.requests.append((method, path, range_header))


def _handler(fake: FakeHub):
  class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
      pass

    def do_HEAD(self):
      self._route(body=False)

    def do_GET(self):
      self._route(body=True)

    def _route(self, body):
      parts = urlsplit(self.path).path.strip("/").split("/")
      if len(parts) > 2 and parts[2] == "resolve":
        self._resolve(parts, body)
      elif body and parts[:2] == ["api", "models"]:
        self._tree(parts[2:])
      else:  # anything else the client asks (huggingface_hub 2.x's /api/agent-harnesses)
        self._error(404, "NotServed")

    def _error(self, status, code, commit=None):
      self.send_response(status)
      self.send_header("X-Error-Code", code)
      if commit:
        self.send_header("X-Repo-Commit", commit)
      self.send_header("Content-Length", "0")
      self.end_headers()

    def _repo_and_revision(self, parts):
      """(repo files, commit) for ['owner', 'name', 'resolve'|'tree', revision, ...],
      or None after answering with the hub's error."""
      files = fake.repos.get(f"{parts[0]}/{parts[1]}") if len(parts) > 3 else None
      if files is None:
        self._error(401, "RepoNotFound")  # what the hub answers for a missing repo
        return None
      if unquote(parts[3]) not in fake.revisions:
        self._error(404, "RevisionNotFound")
        return None
      return files, COMMIT

    def _resolve(self, parts, body):
      path = unquote("/".join(parts[4:]))
      fake.log(self.command, path, self.headers.get("Range"))
      found = self._repo_and_revision(parts)
      if found is None:
        return
      files, commit = found
      if path not in files:
        self._error(404, "EntryNotFound", commit)
        return
      data = files[path]
      start = int(self.headers["Range"].split("=")[1].split("-")[0]) if (
          body and self.headers.get("Range")) else 0
      self.send_response(206 if start else 200)
      self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
      self.send_header("X-Repo-Commit", commit)
      self.send_header("Accept-Ranges", "bytes")
      self.send_header("Content-Length", str(len(data) - start))
      if start:
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
      self.end_headers()
      if not body:
        return
      if path in fake.cut_next_get:  # announce the whole file, send half, hang up
        fake.cut_next_get.discard(path)
        self.wfile.write(data[start:start + (len(data) - start) // 2])
        self.close_connection = True
        return
      self.wfile.write(data[start:])

    def _tree(self, parts):
      fake.log("LIST", "/".join(parts), None)
      found = self._repo_and_revision(parts)
      if found is None:
        return
      listing = json.dumps([{"type": "file", "path": p, "size": len(d),
                             "oid": hashlib.sha1(d).hexdigest()}
                            for p, d in sorted(found[0].items())]).encode()
      self.send_response(200)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(listing)))
      self.end_headers()
      self.wfile.write(listing)

  return Handler


# ------------------------------------------------------------- tiny official models

def _safetensors(state) -> bytes:
  from safetensors.numpy import save
  return save(state)


def official_dit_state(seed=0) -> dict:
  """A tiny random official DiT (BaseModel.state_dict() keys): 64 wide, 2 blocks, 4 frames
  of 32 tokens of 4 channels, unconditional."""
  import torch
  from tests import official_reference as ref
  torch.manual_seed(seed)
  net = ref.DiTCrossattn(hidden=64, depth=2, heads=2, num_frames=4, tokens=32, channels=4)
  return ref.numpy_state(ref.randomize(ref.BaseModel(net, num_classes=0), seed=seed).eval())


def official_vae_state(seed=0, token_dim=4) -> dict:
  """A tiny random TiTok_KL (32 px, patch 8, 64 wide, 2 blocks)."""
  import torch
  from tests import official_reference as ref
  torch.manual_seed(seed)
  net = ref.TiTokKL(width=64, depth=2, heads=2, image_size=32, patch=8, token_dim=token_dim)
  return ref.numpy_state(ref.randomize(net, seed=seed).eval())


def titok_bytes(seed=0) -> bytes:
  """A tiny TiTok-L-32-like VQ tokenizer (token size 12, a VQ and a pixel codebook) as
  the torch .bin the authors' README names."""
  import numpy as np
  import torch
  state = official_vae_state(seed, token_dim=6)  # conv_out: 12 channels, as TiTok-L-32
  rng = np.random.default_rng(seed)
  state["decoder.decoder_embed.weight"] = rng.standard_normal((64, 12)).astype(np.float32)
  state.pop("pixel_quantize_conv.weight"), state.pop("pixel_quantize_conv.bias")
  state["quantize.embedding.weight"] = rng.standard_normal((16, 12)).astype(np.float32)
  state["pixel_quantize.embedding.weight"] = rng.standard_normal((64, 32)).astype(np.float32)
  buffer = io.BytesIO()
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, buffer)
  return buffer.getvalue()


def released_paths(dataset) -> dict:
  """{'dit': path, 'vae': path} named as the authors' scripts name their checkpoints:
  experiments/<timestamp>_<model>_<data>/ckpt_dir/checkpoint-N/model.safetensors (the DiT's
  timestamp and step are made up; the VAE's folder is the one their DiT config loads)."""
  release = hub.RELEASED[dataset]
  return {"dit": f"experiments/2024-11-01T00-00-00_{release.dit_match[0]}/ckpt_dir/"
                 "checkpoint-100000/model.safetensors",
          "vae": f"experiments/{release.vae_match[0]}/ckpt_dir/checkpoint-500000/model.safetensors"}


def released_repo(dataset, seed=0) -> dict:
  """The fake authors' repository for `dataset`: its DiT and AR-VAE, and a README."""
  paths = released_paths(dataset)
  return {paths["dit"]: _safetensors(official_dit_state(seed)),
          paths["vae"]: _safetensors(official_vae_state(seed)),
          "README.md": b"# fake ar_diffusion\n"}


def serve_released(dataset, seed=0) -> FakeHub:
  """A started FakeHub holding the authors' repository (hub.REPO) for `dataset`."""
  return FakeHub({hub.REPO: released_repo(dataset, seed)}).start()
