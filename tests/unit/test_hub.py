"""hf:// inputs of `ardiff convert` and the authors' released models, against a local fake
of the Hub (tests/fake_hub.py) that the real huggingface_hub downloads from."""

import json
import pathlib
import socket
import time

import numpy as np
import pytest

pytest.importorskip("torch")  # the fake's official models come from the PyTorch reference
pytest.importorskip("huggingface_hub")

from ardiffusion_jax import cli  # noqa: E402
from ardiffusion_jax.convert import hub  # noqa: E402
from ardiffusion_jax.errors import ArgumentError, CheckpointError  # noqa: E402
from tests import fake_hub, support  # noqa: E402

REPO = hub.REPO
PATHS = fake_hub.released_paths("faceforensics")
FILES = {"official-dit": PATHS["dit"], "official-vae": PATHS["vae"], "titok-init": hub.TITOK_FILE}


@pytest.fixture(scope="module")
def released():
  """The fake authors' repository (built once: torch), with TiTok-L-32 at its README's name."""
  return {**fake_hub.released_repo("faceforensics"), hub.TITOK_FILE: fake_hub.titok_bytes()}


@pytest.fixture
def fake(released, tmp_path, monkeypatch):
  """The fake hub as HF_ENDPOINT and an empty hub cache as HF_HOME."""
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
  monkeypatch.delenv("HF_HUB_CACHE", raising=False)
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  with fake_hub.FakeHub({REPO: released}) as server:
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server


@pytest.mark.parametrize("uri,expected", [
    ("hf://TrizZZZ/ar_diffusion/tokenizer_titok_l32.bin",
     hub.HubFile("TrizZZZ/ar_diffusion", "tokenizer_titok_l32.bin")),
    ("hf://o/r@v1.0/a/b.safetensors", hub.HubFile("o/r", "a/b.safetensors", "v1.0")),
    ("hf://o/r@refs/pr/3/x.bin", hub.HubFile("o/r", "x.bin", "refs/pr/3")),
    ("hf://o/r@feature%2Fnew/x.bin", hub.HubFile("o/r", "x.bin", "feature/new")),
    ("hf://datasets/o/r/x.npz", hub.HubFile("o/r", "x.npz", None, "dataset")),
])
def test_hub_uris_parse_and_round_trip(uri, expected):
  assert hub.is_hub_uri(uri)
  assert hub.parse_uri(uri) == expected
  assert hub.parse_uri(expected.uri()) == expected


def test_local_inputs_pass_through_untouched():
  for value in ("runs/ucf/model.safetensors", "/abs/hf/model.bin", "hub:/x.npz"):
    assert not hub.is_hub_uri(value) and hub.resolve_input(value) == value


@pytest.mark.parametrize("uri,reason", [
    ("hf://", "the owner is missing"),
    ("hf://TrizZZZ", "the repository name is missing"),
    ("hf://TrizZZZ/ar_diffusion", "no file path after the repository"),
    ("hf://TrizZZZ/ar_diffusion/", "no file path after the repository"),
    ("hf://TrizZZZ/ar_diffusion@/model.safetensors", "the revision after '@' is empty"),
    ("hf://TrizZZZ/ar diffusion/model.safetensors", "'ar diffusion' is not a valid hub repository"),
    ("hf://Triz--ZZZ/ar_diffusion/model.safetensors", "'Triz--ZZZ' is not a valid hub owner"),
    ("hf://TrizZZZ/ar_diffusion/a//model.safetensors", "'a//model.safetensors' has an empty"),
    ("hf://TrizZZZ/ar_diffusion/../model.safetensors", "has an empty, '.' or '..' part"),
    ("hf:/TrizZZZ/ar_diffusion/model.safetensors", "does not start with hf://"),
])
def test_malformed_hub_uris_get_one_clear_error(uri, reason):
  with pytest.raises(ArgumentError) as error:
    hub.resolve_input(uri)
  message = str(error.value)
  assert error.value.argument == "input"  # the CLI shows it as --input
  assert message.startswith(f"input: {uri!r} is not a hub file: ")
  assert reason in message and hub.USAGE in message and "\n" not in message


_restore = support.restore_latest


def _leaves(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _leaves(value, f"{prefix}{key}/")
    else:
      yield f"{prefix}{key}", np.asarray(value)


@pytest.mark.parametrize("kind", ["official-dit", "official-vae", "titok-init"])
def test_hub_input_converts_exactly_like_the_local_file(fake, released, tmp_path, kind):
  path, args = FILES[kind], fake_hub.CONVERT_ARGS[kind]
  uri = f"hf://{REPO}/{path}"
  assert cli.main(["convert", kind, "--input", uri, "--output", str(tmp_path / "hub"), *args]) == 0
  assert fake.count("GET", path) == 1
  local = tmp_path / pathlib.PurePath(path).name  # the same bytes, read from disk
  local.write_bytes(released[path])
  assert cli.main(["convert", kind, "--input", str(local), "--output", str(tmp_path / "local"),
                   *args]) == 0

  (hub_config, hub_state), (local_config, local_state) = (_restore(tmp_path / "hub"),
                                                          _restore(tmp_path / "local"))
  assert hub_config.to_dict() == local_config.to_dict()
  ours, theirs = dict(_leaves(hub_state)), dict(_leaves(local_state))
  assert ours.keys() == theirs.keys() and len(ours) > 10
  for key, value in ours.items():
    np.testing.assert_array_equal(value, theirs[key], err_msg=key)
  # The run says where it came from; a local conversion writes no such record.
  assert json.loads((tmp_path / "hub" / "source.json").read_text()) == dict(
      uri=uri, repo_id=REPO, repo_type="model", path=path, revision="main",
      commit=fake_hub.COMMIT)
  assert not (tmp_path / "local" / "source.json").exists()


def test_a_cached_file_is_not_downloaded_again_and_offline_reads_the_cache(fake, tmp_path,
                                                                            monkeypatch):
  uri, path = f"hf://{REPO}/{PATHS['vae']}", PATHS["vae"]
  first = hub.resolve_input(uri)
  assert pathlib.Path(first).is_relative_to(tmp_path / "hf" / "hub")  # HF_HOME, read per call
  assert (fake.count("HEAD", path), fake.count("GET", path)) == (1, 1)
  # Online, the hub is asked whether the file changed (HEAD), but it is not fetched again.
  assert hub.resolve_input(uri) == first
  assert (fake.count("HEAD", path), fake.count("GET", path)) == (2, 1)
  # Offline, the cache alone answers: no request at all.
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  before = len(fake.requests)
  assert hub.resolve_input(uri) == first
  assert len(fake.requests) == before
  # ... and a file never downloaded is one clear error, still without a request.
  with pytest.raises(CheckpointError) as error:
    hub.resolve_input(f"hf://{REPO}/{PATHS['dit']}")
  assert str(error.value).startswith(
      f"hf://{REPO}/{PATHS['dit']}: HF_HUB_OFFLINE is set and no copy of {PATHS['dit']} "
      f"({REPO}, revision main) is cached in {tmp_path / 'hf' / 'hub'}; unset HF_HUB_OFFLINE")
  with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set, so the files of .* cannot"):
    hub.list_files()
  assert len(fake.requests) == before


@pytest.mark.parametrize("uri,expected", [
    (f"hf://{REPO}/experiments/missing/model.safetensors",
     [f"{REPO} has no file 'experiments/missing/model.safetensors' at revision main",
      f"/{REPO}/tree/main"]),
    ("hf://nobody/nothing/model.safetensors", ["repository nobody/nothing not found on http://"]),
    (f"hf://{REPO}@v9/{PATHS['dit']}", [f"{REPO} has no revision 'v9'"]),
    (f"hf://{REPO}@v9", ["--input:", "no file path after the repository"]),
])
def test_hub_errors_are_one_cli_line_naming_repo_path_and_revision(fake, tmp_path, capsys,
                                                                   uri, expected):
  assert cli.main(["convert", "official-dit", "--input", uri, "--output", str(tmp_path / "out"),
                   *fake_hub.CONVERT_ARGS["official-dit"]]) == 1
  err = capsys.readouterr().err
  assert err.startswith("ardiff convert: error: ") and len(err.strip().splitlines()) == 1
  for part in expected:
    assert part in err
  assert not (tmp_path / "out").exists()


def test_no_network_and_no_cache_is_one_clear_error(tmp_path, monkeypatch, capsys):
  with socket.socket() as closed:  # a port nothing listens on: connections are refused
    closed.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
  monkeypatch.setenv("HF_ENDPOINT", endpoint)
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.setattr(time, "sleep", lambda seconds: None)  # huggingface_hub's retry pauses
  uri = f"hf://{REPO}/{PATHS['dit']}"
  assert cli.main(["convert", "official-dit", "--input", uri, "--output", str(tmp_path / "out"),
                   *fake_hub.CONVERT_ARGS["official-dit"]]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"ardiff convert: error: {uri}: {endpoint} cannot be reached (no network?) and "
                 f"no copy of {PATHS['dit']} ({REPO}, revision main) is cached in "
                 f"{tmp_path / 'hf' / 'hub'}; run once online (or set HF_ENDPOINT to a "
                 "reachable mirror), or pass a local file"]


def test_a_dropped_transfer_resumes_where_it_stopped(tmp_path, monkeypatch):
  monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the client's pause before resuming
  # Larger than huggingface_hub's 10 MB read, so part of it is on disk before the cut.
  data = np.random.default_rng(0).bytes(24 << 20)
  file = hub.HubFile("o/r", "big.bin")
  with fake_hub.FakeHub({"o/r": {"big.bin": data}}) as server:
    server.cut_next_get.add("big.bin")
    try:  # huggingface_hub >= 1 resumes within the call
      local = hub.download(file, cache_dir=tmp_path, endpoint=server.url)
    except CheckpointError as error:  # older ones at the next call, from the partial file
      assert "big.bin" in str(error) and "o/r" in str(error)
      local = hub.download(file, cache_dir=tmp_path, endpoint=server.url)
    ranges = [r for method, _, r in server.requests if method == "GET"]
  assert pathlib.Path(local).read_bytes() == data
  assert len(ranges) == 2 and ranges[0] is None
  resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
  assert 0 < resumed_at <= len(data) // 2


def test_find_released_takes_the_authors_names_and_the_newest_checkpoint():
  unconditional = "experiments/2024-11-02T00-00-00_diff_ardiff_vtattn_x0pred_nvae_midt_ucflatent"
  vae = "experiments/2024-10-21T16-49-02_vae_4ch_32len_large_ucfvidimg/ckpt_dir/checkpoint-427500"
  files = ["README.md", hub.TITOK_FILE,
           "experiments/2024-10-25T18-01-38_diff_ardiff_vtattn_x0pred_nvae_midt_class_ucflatent/"
           "ckpt_dir/checkpoint-195000/model.safetensors",
           f"{unconditional}/ckpt_dir/checkpoint-20000/model.safetensors",
           f"{unconditional}/ckpt_dir/checkpoint-50000/model.safetensors",
           f"{unconditional}/ckpt_dir/checkpoint-50000/optimizer.bin",
           f"{vae}/model.safetensors", f"{vae}/scaler.pt"]
  assert hub.find_released("ucf101", files) == {
      "dit": f"{unconditional}/ckpt_dir/checkpoint-50000/model.safetensors",
      "vae": f"{vae}/model.safetensors"}
  # Renamed files: the dataset's name is the last resort.
  renamed = ["sky/ardiff_sky.safetensors", "sky/sky_vae.bin", "taichi/ardiff.safetensors"]
  assert hub.find_released("sky", renamed) == {"dit": "sky/ardiff_sky.safetensors",
                                               "vae": "sky/sky_vae.bin"}
  with pytest.raises(CheckpointError, match=r"no taichi AR-VAE weights .*looked for "
                     r"2024-10-18T08-13-47_vae_4ch_32len_large_taichividimg, taichi_vae, taichi\); "
                     r"weight files there: sky/ardiff_sky.safetensors, sky/sky_vae.bin"):
    hub.find_released("taichi", renamed)
  with pytest.raises(ArgumentError, match="unknown dataset 'kinetics'; released: sky, taichi"):
    hub.find_released("kinetics", files)


def test_released_table_and_the_repository_listing(fake):
  for name, release in hub.RELEASED.items():
    assert release.dataset == name and pathlib.Path(f"configs/{name}.py").is_file()
    # Sampleable as listed: s within [0, S], S on the authors' grid (dividing 1000).
    assert 0 <= release.s <= release.steps and 1000 % release.steps == 0 and release.ucgs >= 1
  assert hub.released_uris("faceforensics") == {kind: f"hf://{REPO}/{path}"
                                                for kind, path in PATHS.items()}
  assert fake.count("LIST") == 1 and fake.count("GET") == 0
