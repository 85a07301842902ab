"""Weights from the Hugging Face Hub: `hf://OWNER/REPO[@REVISION]/PATH` inputs for
`ardiff convert`, and the authors' released models (`RELEASED`).

A hub input is downloaded with `huggingface_hub.hf_hub_download` into its cache
(HF_HOME, or HF_HUB_CACHE), so a second conversion reads the cached copy instead of
downloading again, and a transfer cut off mid-file resumes where it stopped (within the
call with huggingface_hub >= 1, at the next call with older versions). Every failure
(no such repository, revision or file, no network and nothing cached, a gated
repository) is raised as one `CheckpointError` line naming the repository, the file and
the revision; a malformed URI as an `ArgumentError` (the CLI's --input).

The authors' hub repository `TrizZZZ/ar_diffusion` could not be listed from the machine
this was written on (no network): their README says it holds the AR-VAE and
AR-Diffusion checkpoints of the four datasets and `tokenizer_titok_l32.bin`, but not the
file names. `find_released` therefore matches the names their own scripts give the
checkpoints against the repository's file list; `RELEASED` records those names and the
sampling settings of their inference scripts.
"""

import dataclasses
import importlib
import json
import logging
import os
import pathlib
import re
from typing import Optional
from urllib.parse import quote, unquote

from ardiffusion_jax.errors import ArgumentError, CheckpointError

PREFIX = "hf://"
# The canonical hub URI form (huggingface_hub's hf:// URIs) has an optional type prefix.
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"dataset": "datasets/", "space": "spaces/"}  # models have none
# Hub repository ids: letters, digits, '-', '_', '.', not starting with a separator,
# and neither '--' nor '..' (huggingface_hub's validate_repo_id).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
# A pull request's revision holds slashes of its own; other revisions with '/' are %2F-encoded.
_PR_REVISION = re.compile(r"refs/pr/\d+(?=/|$)")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz")
# What accelerate's save_state writes next to model.safetensors: never the weights.
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "random_states")
USAGE = "expected hf://OWNER/REPO/PATH or hf://OWNER/REPO@REVISION/PATH"


@dataclasses.dataclass(frozen=True)
class HubFile:
  """One file of a hub repository; revision None is the default branch."""
  repo_id: str
  path: str
  revision: Optional[str] = None
  repo_type: str = "model"

  def uri(self) -> str:
    revision = self.revision
    if revision and not _PR_REVISION.fullmatch(revision):
      revision = quote(revision, safe="")
    at = f"@{revision}" if revision else ""
    return f"{PREFIX}{_URL_PREFIX.get(self.repo_type, '')}{self.repo_id}{at}/{self.path}"


def is_hub_uri(value) -> bool:
  # 'hf:' without both slashes is taken as a mistyped URI (named by parse_uri), not a path.
  return isinstance(value, str) and value.startswith("hf:")


def _malformed(value, reason):
  return ArgumentError("input", f"{value!r} is not a hub file: {reason}; {USAGE}")


def parse_uri(value: str) -> HubFile:
  """`hf://[models/|datasets/|spaces/]OWNER/REPO[@REVISION]/PATH` -> HubFile."""
  if not value.startswith(PREFIX):
    raise _malformed(value, f"it does not start with {PREFIX}")
  body = value[len(PREFIX):]
  kind, _, rest = body.partition("/")
  repo_type = REPO_TYPES.get(kind, "model")
  if kind in REPO_TYPES:
    body = rest
  owner, _, rest = body.partition("/")
  name, _, path = rest.partition("/")
  revision = None
  if "@" in name:  # REPO@REVISION: the revision runs to the next '/', or is a refs/pr/N
    name, _, after = rest.partition("@")
    pr = _PR_REVISION.match(after)
    if pr:
      revision, path = pr.group(), after[pr.end() + 1:]
    else:
      revision, _, path = after.partition("/")
    revision = unquote(revision)
    if not revision:
      raise _malformed(value, "the revision after '@' is empty")
  for part, what in ((owner, "owner"), (name, "repository name")):
    if not part:
      raise _malformed(value, f"the {what} is missing")
    if not _NAME.fullmatch(part) or "--" in part or ".." in part:
      raise _malformed(value, f"{part!r} is not a valid hub {what}")
  if not path:
    raise _malformed(value, "no file path after the repository")
  if any(segment in ("", ".", "..") for segment in path.split("/")):
    raise _malformed(value, f"the file path {path!r} has an empty, '.' or '..' part")
  return HubFile(f"{owner}/{name}", path, revision, repo_type)


def _huggingface_hub():
  try:
    import huggingface_hub
    import huggingface_hub.constants  # submodules: the package loads its names lazily
    import huggingface_hub.errors
  except ImportError as error:
    raise CheckpointError("hf:// inputs need huggingface_hub: pip install huggingface_hub "
                          "(or pass a local file)") from error
  return huggingface_hub


def _truthy(name) -> bool:
  return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _settings(cache_dir, endpoint):
  """(huggingface_hub, cache dir, endpoint, offline) with HF_ENDPOINT, HF_HUB_CACHE,
  HF_HOME and HF_HUB_OFFLINE read now: huggingface_hub reads them once, when it is
  imported, and a notebook may set them later."""
  hub = _huggingface_hub()
  endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or hub.constants.ENDPOINT).rstrip("/")
  if cache_dir is None:
    cache_dir = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME")
        else hub.constants.HF_HUB_CACHE)
  offline = _truthy("HF_HUB_OFFLINE") or bool(hub.constants.HF_HUB_OFFLINE)
  return hub, str(cache_dir), endpoint, offline


def _transfer_errors(hub) -> tuple:
  """What a failed transfer raises: huggingface_hub's errors, OSError (which the
  `requests` errors of huggingface_hub < 1.0 are) and the httpx / httpx2 errors of 1.x / 2.x."""
  errors = [hub.errors.HfHubHTTPError, hub.errors.EntryNotFoundError, OSError]
  for client in ("httpx2", "httpx"):
    try:
      errors.append(importlib.import_module(client).HTTPError)
    except ImportError:
      pass
  return tuple(errors)


def _hub_error(hub, error, file: HubFile, endpoint, cache_dir, offline) -> CheckpointError:
  """huggingface_hub's exception -> one line that says what to do. LocalEntryNotFoundError
  is tested before EntryNotFoundError, its base class."""
  errors = hub.errors
  uri, revision = file.uri(), file.revision or "main"
  page = f"{endpoint}/{_URL_PREFIX.get(file.repo_type, '')}{file.repo_id}"
  if isinstance(error, errors.GatedRepoError):
    return CheckpointError(f"{uri}: {file.repo_id} is gated; accept its conditions at {page} and "
                           "log in (`hf auth login`) or set HF_TOKEN")
  if isinstance(error, errors.RepositoryNotFoundError):
    return CheckpointError(f"{uri}: repository {file.repo_id} not found on {endpoint} (check "
                           "OWNER/REPO; a private one needs `hf auth login` or HF_TOKEN)")
  if isinstance(error, errors.RevisionNotFoundError):
    return CheckpointError(f"{uri}: {file.repo_id} has no revision {revision!r} (a branch, tag "
                           f"or commit; see {page})")
  if isinstance(error, errors.LocalEntryNotFoundError):
    why, fix = (("HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE and run once online") if offline
                else (f"{endpoint} cannot be reached (no network?)",
                      "run once online (or set HF_ENDPOINT to a reachable mirror)"))
    return CheckpointError(f"{uri}: {why} and no copy of {file.path} ({file.repo_id}, revision "
                           f"{revision}) is cached in {cache_dir}; {fix}, or pass a local file")
  if isinstance(error, errors.EntryNotFoundError):
    return CheckpointError(f"{uri}: {file.repo_id} has no file {file.path!r} at revision "
                           f"{revision}; see the file list at {page}/tree/{revision}")
  first_line = (str(error).strip().splitlines() or [""])[0]
  return CheckpointError(f"{uri}: fetching {file.path} from {file.repo_id} (revision {revision}) "
                         f"on {endpoint} failed ({type(error).__name__}: {first_line})")


def download(file: HubFile, cache_dir=None, endpoint=None) -> str:
  """The local path of `file` in the hub cache, downloaded when not cached; offline
  (HF_HUB_OFFLINE) only the cache is read."""
  hub, cache_dir, endpoint, offline = _settings(cache_dir, endpoint)
  # huggingface_hub logs a warning for every retry of a failed request; when it gives up,
  # the one-line error below says what happened, so its retry lines are held back.
  # (Through its own logging API: that configures its logger first, which a later import
  # inside the download would otherwise do, resetting the level.)
  client_log = importlib.import_module("huggingface_hub.utils.logging")
  level = client_log.get_verbosity()
  client_log.set_verbosity(max(level, logging.ERROR))
  try:
    return hub.hf_hub_download(file.repo_id, file.path, revision=file.revision,
                               repo_type=file.repo_type, cache_dir=cache_dir, endpoint=endpoint,
                               local_files_only=offline)
  except _transfer_errors(hub) as error:
    raise _hub_error(hub, error, file, endpoint, cache_dir, offline) from error
  finally:
    client_log.set_verbosity(level)


def resolve_input(value, cache_dir=None, endpoint=None) -> str:
  """A CLI --input: local paths unchanged, hf:// URIs downloaded (or found in the cache)."""
  return download(parse_uri(value), cache_dir, endpoint) if is_hub_uri(value) else value


def record_source(output, value, local_path):
  """Writes OUTPUT/source.json: the hub file a conversion read and the commit it resolved
  to (the snapshot folder of the cached copy), so the run says where it came from."""
  file = parse_uri(value)
  parts = pathlib.PurePath(local_path).parts
  depth = len(file.path.split("/"))
  commit = (parts[-depth - 1] if len(parts) >= depth + 2 and parts[-depth - 2] == "snapshots"
            else None)
  record = dict(uri=value, repo_id=file.repo_id, repo_type=file.repo_type, path=file.path,
                revision=file.revision or "main", commit=commit)
  (pathlib.Path(output) / "source.json").write_text(json.dumps(record, indent=2) + "\n")


# ----------------------------------------------------------- the authors' released models

REPO = "TrizZZZ/ar_diffusion"
# Named by the authors' README ("download the tokenizer_titok_l32.bin file from
# https://huggingface.co/TrizZZZ/ar_diffusion and put it in the root folder").
TITOK_FILE = "tokenizer_titok_l32.bin"


@dataclasses.dataclass(frozen=True)
class Released:
  """One dataset's released DiT + AR-VAE and how the authors sample it.

  `dit_match` / `vae_match`: parts of the file paths their scripts load, most specific
  first (`find_released` takes the first that occurs in the repository's file list). The
  hub's own file names are UNVERIFIED: they could not be listed from here."""
  dataset: str  # ours: configs/<dataset>.py
  dit_match: tuple
  vae_match: tuple
  s: int  # ardiff_step
  ucgs: float  # guidance scale (`ardiff sample --cfg`)
  frames: int
  steps: int  # DDIM steps S: their BaseModel.sample's ddim_steps=50, which no script overrides
  settings_from: str  # the authors' script with these settings
  note: str = ""


# Experiment folders are named <timestamp>_<model config>_<data config> by their training
# scripts and looked up as experiments/*<model>_<data>*/ckpt_dir/checkpoint-N/ by
# infer_base_script.sh; the VAE paths are the vae_pth_path of their DiT model configs,
# then the experiment names of stage1_vae_scripts/*_vae_infer.sh.
_MODEL = "diff_ardiff_vtattn_x0pred_nvae_midt"
RELEASED = {
    "sky": Released(
        "sky", ("diff_ardiff_vtattn_x0pred_midt_skyvidlatent", f"{_MODEL}_skyvidlatent", "sky"),
        ("2024-09-20T17-45-47_vae_4ch_32len_large_skyvid_img_kl10", "skytimelapse_vae", "sky"),
        s=5, ucgs=2.0, frames=16, steps=50,
        settings_from="shell_scripts/stage2_ardiff_scripts/sky_gen/run_cmd.sh",
        note="their Sky inference uses diff_ardiff_vtattn_x0pred_midt (VAE kl10, checkpoint "
             "40000); the README's Sky training example uses the nvae model, whose config "
             "loads another VAE (zerokl_wdisc1.0, checkpoint 80000): which one is released "
             "is not stated"),
    "taichi": Released(
        "taichi", (f"{_MODEL}_taichilatent", "taichi"),
        ("2024-10-18T08-13-47_vae_4ch_32len_large_taichividimg", "taichi_vae", "taichi"),
        s=5, ucgs=2.0, frames=16, steps=50,
        settings_from="shell_scripts/stage2_ardiff_scripts/taichi_gen/run_cmd.sh",
        note="run_cmd.sh also samples at s=0; a user reports the paper's Taichi setting as "
             "s=50 (mzsun01/AR-Diffusion issue #5)"),
    "faceforensics": Released(
        "faceforensics", (f"{_MODEL}_facelatent", "face"),
        ("2024-10-23T14-11-01_vae_4ch_32len_large_facevidimg", "faceforensics_vae", "face"),
        s=5, ucgs=2.0, frames=16, steps=50,
        settings_from="shell_scripts/stage2_ardiff_scripts/face_gen/run_cmd.sh (and README)"),
    "ucf101": Released(
        "ucf101", (f"{_MODEL}_ucflatent", "ucf"),
        ("2024-10-21T16-49-02_vae_4ch_32len_large_ucfvidimg", "ucf101_vae", "ucf"),
        s=0, ucgs=1.0, frames=16, steps=50,
        settings_from="shell_scripts/stage2_ardiff_scripts/ucf_gen/run_cmd.sh",
        note="the unconditional model (finetuned from the class-conditional "
             f"{_MODEL}_class run, per the commented lines of run_cmd.sh)"),
}


_KIND_NAMES = {"dit": "DiT", "vae": "AR-VAE"}


def _checkpoint_step(path) -> int:
  found = re.findall(r"checkpoint-(\d+)", path)
  return int(found[-1]) if found else -1


def find_released(dataset: str, files) -> dict:
  """{'dit': path, 'vae': path} of `dataset`'s released weights among the repository's
  `files`: the first `*_match` entry that occurs in a weights file's path (DiT paths
  contain 'ardiff', AR-VAE paths 'vae' and not 'ardiff'; optimizer and other training
  state files are skipped), in its newest checkpoint-N."""
  if dataset not in RELEASED:
    raise ArgumentError("dataset", f"unknown dataset {dataset!r}; released: {', '.join(RELEASED)}")
  release = RELEASED[dataset]
  weights = sorted(f for f in files if f.lower().endswith(WEIGHT_SUFFIXES)
                   and not f.rsplit("/", 1)[-1].lower().startswith(TRAINING_STATE))
  kinds = {"dit": ([f for f in weights if "ardiff" in f.lower()], release.dit_match),
           "vae": ([f for f in weights if "vae" in f.lower() and "ardiff" not in f.lower()],
                   release.vae_match)}
  found = {}
  for kind, (candidates, matches) in kinds.items():
    for match in matches:
      hits = [f for f in candidates if match.lower() in f.lower()]
      if hits:
        found[kind] = max(hits, key=_checkpoint_step)
        break
    else:
      shown = ", ".join(weights[:20]) + (f", ... ({len(weights) - 20} more)" if len(weights) > 20
                                         else "")
      raise CheckpointError(
          f"no {dataset} {_KIND_NAMES[kind]} weights among the repository's files (looked for "
          f"{', '.join(matches)}); weight files there: {shown or 'none'}. Pass the file's "
          "hf:// path yourself")
  return found


def list_files(repo_id: str = REPO, revision=None, endpoint=None) -> list:
  """Every file path of a hub model repository (one listing request; needs the network)."""
  hub, cache_dir, endpoint, offline = _settings(None, endpoint)
  where = HubFile(repo_id, "(file list)", revision)
  if offline:
    raise CheckpointError(f"{where.uri()}: HF_HUB_OFFLINE is set, so the files of {repo_id} "
                          "cannot be listed; pass the files' hf:// paths yourself (cached "
                          "copies are used offline)")
  try:
    return hub.HfApi(endpoint=endpoint).list_repo_files(repo_id, revision=revision)
  except _transfer_errors(hub) as error:
    raise _hub_error(hub, error, where, endpoint, cache_dir, offline) from error


def released_uris(dataset: str, revision=None, endpoint=None) -> dict:
  """{'dit': 'hf://...', 'vae': 'hf://...'} for `dataset`, found in the authors' repository."""
  files = list_files(REPO, revision, endpoint)
  return {kind: HubFile(REPO, path, revision).uri()
          for kind, path in find_released(dataset, files).items()}
