"""The training schedulers and the AD matrix are exact, not just plausible."""

import collections
import itertools
import math

import jax
import numpy as np
import pytest
from scipy import stats

from ardiffusion_jax import timesteps

F, T = 4, 6  # 126 non-decreasing compositions: small enough to enumerate
NUM_SAMPLES = 60_000


def _compositions(num_frames, num_timesteps):
  return list(itertools.combinations_with_replacement(range(num_timesteps), num_frames))


def _exact_probabilities(scheme, num_frames, num_timesteps):
  """Probabilities of every non-decreasing composition, by enumeration alone."""
  comps = _compositions(num_frames, num_timesteps)
  if scheme == "increasing_uniform":
    return comps, np.full(len(comps), 1 / len(comps))
  if scheme == "equal":
    return comps, np.array([1 / num_timesteps if len(set(c)) == 1 else 0.0 for c in comps])
  if scheme == "fopp":
    through = collections.Counter((f, t) for c in comps for f, t in enumerate(c))
    return comps, np.array([
        sum(1 / (num_frames * num_timesteps * through[f, t]) for f, t in enumerate(c))
        for c in comps])
  if scheme == "naive_increasing":
    return comps, np.array([
        np.prod([1 / num_timesteps] + [1 / (num_timesteps - c[i - 1]) for i in range(1, len(c))])
        for c in comps])
  raise ValueError(scheme)


def _sample(scheme, batch, num_frames, num_timesteps, seed=0):
  fn = jax.jit(lambda key: timesteps.sample_timesteps(key, scheme, batch, num_frames,
                                                      num_timesteps))
  return np.asarray(fn(jax.random.key(seed)))


def _composition_counts(samples, comps):
  index = {c: i for i, c in enumerate(comps)}
  counts = np.zeros(len(comps))
  for row in map(tuple, samples):
    counts[index[row]] += 1
  return counts


def test_paper_figure_3_counts():
  tables = timesteps.fopp_tables(3, 3)
  assert round(math.exp(tables.log_num_compositions())) == 10
  np.testing.assert_allclose(np.exp(tables.log_paths_through()),
                             [[6, 3, 1], [3, 4, 3], [1, 3, 6]], rtol=1e-12)


@pytest.mark.parametrize("num_frames,num_timesteps", [(1, 5), (3, 4), (5, 7)])
def test_tables_match_brute_force_counts(num_frames, num_timesteps):
  tables = timesteps.fopp_tables(num_frames, num_timesteps)
  comps = _compositions(num_frames, num_timesteps)
  for f in range(num_frames):
    for t in range(num_timesteps):
      after = {c[f + 1:] for c in comps if c[f] == t}
      before = {c[:f] for c in comps if c[f] == t}
      assert round(math.exp(tables.log_ds[f, t])) == len(after)
      assert round(math.exp(tables.log_de[f, t])) == len(before)


def test_tables_large_sizes_are_finite_and_match_binomials():
  num_frames, num_timesteps = 128, 1000
  tables = timesteps.fopp_tables(num_frames, num_timesteps)
  assert np.all(np.isfinite(tables.log_ds)) and np.all(np.isfinite(tables.log_de))

  def log_binom(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

  for f, t in [(0, 0), (5, 300), (64, 999), (127, 10)]:
    n_after = num_frames - 1 - f
    assert tables.log_ds[f, t] == pytest.approx(log_binom(num_timesteps - 1 - t + n_after, n_after),
                                                rel=1e-10)
    assert tables.log_de[f, t] == pytest.approx(log_binom(t + f, f), rel=1e-10, abs=1e-10)
  # The authors' float table peaks at 8.5e32 for F=16; ours is its logarithm.
  assert math.exp(timesteps.fopp_tables(16, 1000).log_ds.max()) == pytest.approx(8.4895e32, rel=1e-4)


@pytest.mark.parametrize("scheme", ["fopp", "increasing_uniform", "equal"])
def test_composition_frequencies_match_exact_probabilities(scheme):
  comps, probs = _exact_probabilities(scheme, F, T)
  samples = _sample(scheme, NUM_SAMPLES, F, T)
  counts = _composition_counts(samples, comps)
  support = probs > 0
  assert counts[~support].sum() == 0
  _, p_value = stats.chisquare(counts[support], probs[support] * NUM_SAMPLES)
  assert p_value > 1e-3, f"{scheme}: chi-square p = {p_value:.2e}"


def test_chi_square_has_power_against_the_naive_scheme():
  # The same test must reject samples from a different distribution.
  comps, uniform = _exact_probabilities("increasing_uniform", F, T)
  counts = _composition_counts(_sample("naive_increasing", NUM_SAMPLES, F, T), comps)
  assert stats.chisquare(counts, uniform * NUM_SAMPLES).pvalue < 1e-12
  _, naive = _exact_probabilities("naive_increasing", F, T)
  assert stats.chisquare(counts, naive * NUM_SAMPLES).pvalue > 1e-3


@pytest.mark.parametrize("anchor_frame,anchor_t", [(0, 2), (1, 3), (3, 4), (2, 5)])
def test_fopp_given_anchor_is_uniform_over_consistent_compositions(anchor_frame, anchor_t):
  consistent = [c for c in _compositions(F, T) if c[anchor_frame] == anchor_t]
  batch = 20_000
  fn = jax.jit(lambda key: timesteps.fopp_complete(
      key, np.full(batch, anchor_frame), np.full(batch, anchor_t), F, T))
  samples = np.asarray(fn(jax.random.key(anchor_frame * 10 + anchor_t)))
  assert np.all(samples[:, anchor_frame] == anchor_t)
  counts = _composition_counts(samples, consistent)
  assert counts.sum() == batch  # every sample is one of the consistent compositions
  _, p_value = stats.chisquare(counts)
  assert p_value > 1e-3


def test_fopp_is_exact_where_log_counts_are_large():
  # F=16, T=1000: log N reaches 75, where plain float32 would bias the inverse CDF.
  num_frames, num_timesteps, batch = 16, 1000, 100_000
  fn = jax.jit(lambda key: timesteps.fopp_complete(
      key, np.zeros(batch, np.int32), np.zeros(batch, np.int32), num_frames, num_timesteps))
  second = np.asarray(fn(jax.random.key(7)))[:, 1]
  counts = timesteps.log_completion_counts(num_frames, num_timesteps)
  # P(t_1 = k | t_0 = 0) = N(14, k) / N(15, 0).
  probs = np.exp(counts[num_frames - 2, :num_timesteps] - counts[num_frames - 1, 0])
  assert probs.sum() == pytest.approx(1.0, abs=1e-9)
  edges = np.searchsorted(np.cumsum(probs), np.linspace(0, 1, 21)[1:-1])  # ~equal-mass bins
  bins = np.split(np.arange(num_timesteps), edges)
  expected = np.array([probs[b].sum() for b in bins]) * batch
  observed = np.array([np.isin(second, b).sum() for b in bins])
  assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_fopp_matches_the_spec_frame_means():
  samples = _sample("fopp", 20_000, 16, 1000, seed=3)
  spec_means = [100, 177, 240, 296, 346, 391, 434, 477, 519, 561, 601, 647, 695, 749, 813, 888]
  # The reference figures come from 2,000 draws; their own noise is about ±10.
  np.testing.assert_allclose(samples.mean(0), spec_means, atol=15)


@pytest.mark.parametrize("scheme", timesteps.SCHEMES)
def test_every_scheme_under_jit_with_traced_key(scheme):
  samples = _sample(scheme, 512, 16, 1000, seed=11)
  assert samples.shape == (512, 16) and samples.dtype == np.int32
  assert samples.min() >= 0 and samples.max() <= 999
  monotone = np.all(np.diff(samples, axis=1) >= 0)
  assert monotone == (scheme != "independent")


def test_single_frame_and_single_timestep_edge_cases():
  for scheme in timesteps.SCHEMES:
    assert _sample(scheme, 4, 1, 10).shape == (4, 1)
    assert np.all(_sample(scheme, 4, 5, 1) == 0)


@pytest.mark.parametrize("kwargs,message", [
    (dict(scheme="fopp", batch_size=2, num_frames=0, num_timesteps=10), "num_frames"),
    (dict(scheme="fopp", batch_size=2, num_frames=4, num_timesteps=0), "num_timesteps"),
    (dict(scheme="fopp", batch_size=0, num_frames=4, num_timesteps=10), "batch_size"),
    (dict(scheme="sideways", batch_size=2, num_frames=4, num_timesteps=10), "unknown timestep scheme"),
])
def test_bad_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    timesteps.sample_timesteps(jax.random.key(0), **kwargs)


# ---------------------------------------------------------------- AD step matrix


def _authors_iterative_matrix(num_frames, num_steps, s):
  """The authors' row-by-row rule (their fifoddim.generate_timestep_matrix), as an
  independent reference."""
  rows, prev = [], np.zeros(num_frames, int)
  while not np.all(prev == num_steps):
    new = np.zeros(num_frames, int)
    for i in range(num_frames):
      if i == 0 or prev[i - 1] == num_steps:
        new[i] = prev[i] + 1
      else:
        new[i] = new[i - 1] - s
      new[i] = min(max(new[i], 0), num_steps)
    rows.append(new)
    prev = new
  return np.array(rows)


@pytest.mark.parametrize("num_frames,num_steps,s", [
    (16, 50, 0), (16, 50, 1), (16, 50, 5), (16, 50, 50), (4, 5, 2), (1, 10, 3), (8, 7, 3)])
def test_ad_matrix_closed_form_row_count_and_authors_rule(num_frames, num_steps, s):
  step_index, update_mask = timesteps.ad_step_matrix(num_frames, num_steps, s)
  rows = num_steps + s * (num_frames - 1)
  assert step_index.shape == update_mask.shape == (rows, num_frames)
  r, i = np.meshgrid(np.arange(rows), np.arange(num_frames), indexing="ij")
  np.testing.assert_array_equal(step_index, np.clip(r + 1 - i * s, 0, num_steps))
  np.testing.assert_array_equal(step_index, _authors_iterative_matrix(num_frames, num_steps, s))
  previous = np.vstack([np.zeros((1, num_frames), int), step_index[:-1]])
  np.testing.assert_array_equal(update_mask, step_index != previous)
  assert np.all(np.diff(step_index, axis=1) <= 0), "an earlier frame is noisier than a later one"
  assert np.all(update_mask.sum(0) == num_steps)
  assert np.all(step_index[-1] == num_steps)


def test_ad_matrix_is_synchronous_at_zero_and_autoregressive_at_S():
  sync, sync_mask = timesteps.ad_step_matrix(6, 10, 0)
  assert sync.shape[0] == 10 and np.all(sync == sync[:, :1]) and sync_mask.all()
  ar, _ = timesteps.ad_step_matrix(6, 10, 10)
  for row in ar:
    started = np.nonzero(row > 0)[0]
    assert np.all(row[:started.max()] == 10)  # every earlier frame is finished
    assert np.sum((row > 0) & (row < 10)) <= 1


def test_ad_matrix_with_context_frames():
  step_index, update_mask = timesteps.ad_step_matrix(7, 10, 3, context_frames=2)
  plain_index, plain_mask = timesteps.ad_step_matrix(5, 10, 3)
  assert np.all(step_index[:, :2] == 10) and not update_mask[:, :2].any()
  np.testing.assert_array_equal(step_index[:, 2:], plain_index)
  np.testing.assert_array_equal(update_mask[:, 2:], plain_mask)


@pytest.mark.parametrize("args,message", [
    ((0, 50, 5), "num_frames"), ((16, 0, 0), "num_steps"), ((16, 50, -1), r"\[0, S=50\]"),
    ((16, 50, 51), r"\[0, S=50\]"), ((4, 10, 1, 4), "context_frames"),
])
def test_ad_matrix_bad_arguments(args, message):
  with pytest.raises(ValueError, match=message):
    timesteps.ad_step_matrix(*args)


def test_benchmark_numpy_reference_samples_the_same_distribution():
  # The benchmark compares against this loop, so it must be the same algorithm.
  from ardiffusion_jax import bench
  comps, probs = _exact_probabilities("fopp", F, T)
  mat_s, mat_e = bench._numpy_fopp_tables(F, T)
  rng = np.random.default_rng(0)
  samples = np.array([bench._numpy_fopp_sample(rng, mat_s, mat_e) for _ in range(20_000)])
  counts = _composition_counts(samples, comps)
  assert stats.chisquare(counts, probs * len(samples)).pvalue > 1e-3
