"""Mergeable statistics: the merge of k shards equals one pass over all samples (hypothesis
property tests over random shard splits and batchings), and each statistic equals a plain
numpy / brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp.stats import Covariance, Extremes, FiringRate, Histogram, Moments, Sums, TopK

SETTINGS = dict(max_examples=40, deadline=None, database=None)


@st.composite
def split_data(draw, ties: bool = False):
    """Samples [n, F], a random split into k shards, and a random batching of each shard."""
    n = draw(st.integers(1, 200))
    F = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if ties:
        x = torch.randint(-3, 4, (n, F), generator=g).double()
    else:
        scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
        offset = draw(st.sampled_from([0.0, 1.0, 1e4]))
        x = torch.randn(n, F, generator=g, dtype=torch.float64) * scale + offset
    k = draw(st.integers(1, 6))
    shard = torch.randint(0, k, (n,), generator=g)
    batch = draw(st.integers(1, 64))
    return x, shard, k, batch


def _shards(x: torch.Tensor, shard: torch.Tensor, k: int, batch: int):
    """For each shard: its samples' indices, in batches."""
    for s in range(k):
        idx = (shard == s).nonzero()[:, 0]
        yield list(idx.split(batch))


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-6) -> bool:
    scale = b.abs().clamp_min(1e-300)
    return bool(((a - b).abs() <= rel * scale + 1e-12 * b.abs().max().clamp_min(1)).all())


def _merged(make, x, shard, k, batch, update=lambda s, x: s.update(x)):
    parts = []
    for batches in _shards(x, shard, k, batch):
        s = make()
        for idx in batches:
            update(s, x[idx])
        parts.append(s)
    out = parts[0]
    for p in parts[1:]:
        out.merge(p)
    return out


@settings(**SETTINGS)
@given(split_data())
def test_moments_merge_equals_single_pass(data):
    x, shard, k, batch = data
    F = x.shape[1]
    merged = _merged(lambda: Moments((F,)), x, shard, k, batch)
    single = Moments((F,)).update(x)
    assert merged.count == single.count == x.shape[0]
    assert _close(merged.mean, single.mean)
    assert _close(merged.var(), single.var())
    ref = x.numpy()
    assert np.allclose(merged.mean.numpy(), ref.mean(0), rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    assert np.allclose(merged.var().numpy(), ref.var(0), rtol=1e-6, atol=1e-12 * ref.var(0).max() + 1e-300)


def test_moments_stable_far_from_zero():
    """A large common offset (1e8 with unit spread): a naive sum of squares would lose the
    variance in float64; the shifted, pairwise form keeps it."""
    x = torch.randn(10_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 1e8
    m = Moments((3,))
    for c in x.split(333):
        m.update(c)
    assert np.allclose(m.var().numpy(), x.numpy().var(0), rtol=1e-6)


@settings(**SETTINGS)
@given(split_data())
def test_covariance_merge_equals_single_pass(data):
    x, shard, k, batch = data
    F = x.shape[1]
    y = x[:, :1] * 2 - x.sum(1, keepdim=True)
    make = lambda: Covariance(F, m=1, chunk=7)  # noqa: E731 - a small chunk exercises the in-update merge
    parts = []
    for batches in _shards(x, shard, k, batch):
        s = make()
        for idx in batches:
            s.update(x[idx], y[idx])
        parts.append(s)
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    ref_x = np.cov(x.numpy().T, bias=True).reshape(F, F)
    joint = np.cov(np.concatenate([x.numpy(), y.numpy()], 1).T, bias=True)
    tol = 1e-6 * np.abs(joint).max() + 1e-300
    assert merged.count == x.shape[0]
    assert np.allclose(merged.cov().numpy(), ref_x, rtol=1e-6, atol=tol)
    assert np.allclose(merged.cross_cov().numpy()[:, 0], joint[:F, F], rtol=1e-6, atol=tol)


@settings(**SETTINGS)
@given(split_data(ties=True))
def test_firing_extremes_histogram_merge_exactly(data):
    x, shard, k, batch = data
    F = x.shape[1]
    edges = [-2.5, -1.0, 0.0, 0.5, 2.0]
    fire = _merged(lambda: FiringRate((F,)), x, shard, k, batch)
    ext = _merged(lambda: Extremes((F,), dtype=torch.float64), x, shard, k, batch)
    hist = _merged(lambda: Histogram(edges, (F,)), x, shard, k, batch)
    assert fire.count == x.shape[0] and torch.equal(fire.fires, (x > 0).sum(0))
    assert torch.equal(ext.max, x.amax(0)) and torch.equal(ext.min, x.amin(0))
    for f in range(F):
        v = x[:, f].numpy()
        want = [int((v < edges[0]).sum())] + [int(((v >= a) & (v < b)).sum()) for a, b in zip(edges, edges[1:])]
        want.append(int((v >= edges[-1]).sum()))
        assert hist.counts[f].tolist() == want
    assert int(hist.counts.sum()) == x.numel()


@settings(**SETTINGS)
@given(split_data(ties=True), st.integers(1, 8))
def test_topk_merge_equals_brute_force(data, kk):
    """Top k by value, ties to the smaller key, with a payload (the sample index): any split
    and batching gives exactly the brute-force scan."""
    x, shard, k, batch = data
    n, F = x.shape
    keys = torch.randperm(n, generator=torch.Generator().manual_seed(n)) * 7 + 3
    make = lambda: TopK(F, kk, payload_shapes={"i": ((2,), torch.int64, -1)}, dtype=torch.float64)  # noqa: E731

    def update(s, idx):
        s.update(x[idx], keys[idx], lambda f, j: {"i": torch.stack([idx[j], f], -1)})

    parts = []
    for batches in _shards(x, shard, k, batch):
        s = make()
        for idx in batches:
            update(s, idx)
        parts.append(s)
    top = parts[0]
    for p in parts[1:]:
        top.merge(p)
    for f in range(F):
        order = sorted(range(n), key=lambda i: (-float(x[i, f]), int(keys[i])))[:kk]
        got = top.keys[f][top.keys[f] != torch.iinfo(torch.int64).max]
        assert got.tolist() == keys[order].tolist()
        assert top.values[f, : len(order)].tolist() == x[order, f].tolist()
        assert top.payload["i"][f, : len(order), 0].tolist() == order
        assert set(top.payload["i"][f, : len(order), 1].tolist()) <= {f}


def test_sums_merge_and_attributes():
    a, b = Sums(n=(), v=(3,)), Sums(n=(), v=(3,))
    a.update(n=2, v=torch.ones(3))
    b.n += 5
    b.v += torch.arange(3.0)
    a.merge(b)
    assert float(a.n) == 7 and a.v.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="different names"):
        a.merge(Sums(n=()))


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match=r"x has shape \(4, 2\); this statistic takes \[n, \*\(3,\)\]"):
        Moments((3,)).update(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="shape="):
        Moments((0,))
    with pytest.raises(ValueError, match="k=0 must be an int >= 1"):
        TopK(3, 0)
    with pytest.raises(ValueError, match="edges="):
        Histogram([1.0, 0.0])
    with pytest.raises(TypeError, match="cannot merge a FiringRate into a Moments"):
        Moments((2,)).merge(FiringRate((2,)))
    with pytest.raises(ValueError, match="different shape"):
        Moments((2,)).merge(Moments((3,)))
    with pytest.raises(ValueError, match="m=1 targets"):
        Covariance(2, m=1).update(torch.zeros(3, 2))


def test_without_process_group_all_reduce_is_identity():
    m = Moments((2,)).update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    before = (m.count, m.mean.clone(), m.m2.clone())
    m.all_reduce()
    assert m.count == before[0] and torch.equal(m.mean, before[1]) and torch.equal(m.m2, before[2])
