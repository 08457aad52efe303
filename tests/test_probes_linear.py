"""LinearProbe and Subspace on synthetic data with planted structure."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp.probes import OTHER, LinearProbe, Subspace, overlap, overlap_matrix
from interp.probes.probing import control_labels, split_documents


def planted(n=1200, d=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    X = torch.randn(n, d, generator=g) * torch.linspace(0.5, 3, d)  # uneven feature scales
    proj = X @ u
    y = torch.bucketize(proj, torch.quantile(proj, torch.tensor([0.25, 0.5, 0.75])))  # 4 ordered classes
    return X, y, u


def test_probe_recovers_a_planted_direction():
    X, y, u = planted()
    probe = LinearProbe(top_k=4, weight_decay=1e-4).fit(X[:1000], y[:1000])
    assert probe.coef_.shape == (4, 24) and probe.intercept_.shape == (4,)
    assert probe.classes_.tolist() == [0, 1, 2, 3]
    assert float(probe.score(X[1000:], y[1000:])) > 0.9
    sub = Subspace.from_probe(probe, k=1)
    assert sub.k == 1 and abs(float(sub.basis[:, 0] @ u)) > 0.98
    # ridge regression on the projection recovers it too
    reg = LinearProbe(task="regress").fit(X[:1000], (X[:1000] @ u * 10).round().long())
    assert float(reg.score(X[1000:], (X[1000:] @ u * 10).round().long())) > 0.99
    assert abs(float(Subspace.from_probe(reg).basis[:, 0] @ u)) > 0.99


def test_batched_sites_match_separate_fits():
    X, y, u = planted(n=600)
    noise = torch.randn(600, 24, generator=torch.Generator().manual_seed(5))
    Xs = torch.stack([noise, X])  # the label is decodable at site 1 only
    probe = LinearProbe(top_k=4).fit(Xs, y)
    assert probe.coef_.shape == (2, 4, 24)
    acc = probe.score(Xs, y)
    single = [float(LinearProbe(top_k=4).fit(x, y).score(x, y)) for x in Xs]
    assert acc.shape == (2,) and acc[1] > 0.9 and acc[0] < 0.6
    assert torch.allclose(acc, torch.tensor(single), atol=0.02)
    assert probe.predict(Xs).shape == (2, 600) and probe.predict_proba(Xs).sum(-1).allclose(torch.ones(2, 600))


def test_top_k_and_other():
    X = torch.randn(300, 4)
    y = torch.tensor([0] * 100 + [1] * 100 + [2] * 60 + [3] * 40)
    probe = LinearProbe(top_k=2, max_iter=5).fit(X, y)
    assert probe.classes_.tolist() == [0, 1, OTHER]
    assert probe.encode(torch.tensor([0, 1, 2, 3, 99])).tolist() == [0, 1, 2, 2, 2]
    y[:] = torch.arange(300) % 3  # ties: smaller labels win
    assert LinearProbe(top_k=2, max_iter=5).fit(X, y).classes_.tolist() == [0, 1, OTHER]


def test_sklearn_conventions_and_adam():
    p = LinearProbe(top_k=3, solver="adam", max_iter=200)
    assert not any(k.endswith("_") for k in vars(p))  # __init__ only stores parameters
    X, y, _ = planted(n=500)
    assert p.fit(X, y) is p and p.n_features_in_ == 24
    assert float(p.score(X, y)) > 0.75
    with pytest.raises(ValueError, match="not fitted yet; call fit"):
        LinearProbe().predict(X)
    with pytest.raises(ValueError, match="task='bayes' is not supported"):
        LinearProbe(task="bayes").fit(X, y)
    with pytest.raises(ValueError, match="top_k=0 must be an int >= 1"):
        LinearProbe(top_k=0).fit(X, y)
    with pytest.raises(ValueError, match=r"y has shape \[3\] but X has 500 samples"):
        LinearProbe().fit(X, y[:3])
    with pytest.raises(TypeError, match="task='classify' needs integer labels"):
        LinearProbe().fit(X, y.float())
    with pytest.raises(ValueError, match="X contains NaN"):
        LinearProbe().fit(torch.full((4, 2), float("nan")), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="probe was fit on 1 site"):
        p.score(torch.randn(2, 5, 24), torch.zeros(5, dtype=torch.long))


def test_ignored_samples_are_dropped():
    X, y, _ = planted(n=400)
    y2 = y.clone()
    y2[::2] = -100
    p = LinearProbe(top_k=4).fit(X, y2)
    assert -100 not in p.classes_.tolist()
    assert torch.allclose(p.score(X, y2), p.score(X[1::2], y[1::2]))


def test_subspace_geometry():
    d = torch.randn(3, 16)
    with pytest.raises(ValueError, match="directions holds 4 directions but they span only 3 dimension"):
        Subspace(torch.cat([d, d[:1] + d[1:2]]), name="s")  # k would silently shrink
    s = Subspace(torch.cat([d, d[:1] + d[1:2]]), name="s", drop_dependent=True)  # the span is kept
    assert s.k == 3 and s.d_model == 16
    assert torch.allclose(s.basis.T @ s.basis, torch.eye(3), atol=1e-5)
    x = torch.randn(5, 16)
    assert torch.allclose(s.project(x) + s.remove(x), x, atol=1e-5)
    assert torch.allclose(s.project(d), d, atol=1e-4)  # the spanning directions lie inside
    assert torch.allclose(s.remove(x) @ s.basis, torch.zeros(5, 3), atol=1e-5)
    assert torch.allclose(s.coords(x), x @ s.basis)
    assert Subspace(torch.randn(16)).k == 1


def test_subspace_errors():
    s = Subspace(torch.randn(2, 16))
    with pytest.raises(ValueError, match="has d_model=16 but x has d_model=8"):
        s.project(torch.randn(3, 8))
    with pytest.raises(ValueError, match="contains NaN or inf"):
        Subspace(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="zero-norm vector"):
        Subspace(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="directions must be a torch.Tensor"):
        Subspace([1.0, 2.0])
    with pytest.raises(ValueError, match=r"k=5 must be between 1 and d_model=4"):
        Subspace.random(4, 5)
    with pytest.raises(ValueError, match="probe is not fitted"):
        Subspace.from_probe(LinearProbe())


def test_overlap_principal_angles():
    e = torch.eye(4)
    a = Subspace(e[:2], name="a")
    b = Subspace(torch.stack([e[0], math.cos(0.3) * e[1] + math.sin(0.3) * e[2]]), name="b")
    df = overlap(a, b)
    assert df["angle"].tolist() == pytest.approx([0.0, math.degrees(0.3)], abs=1e-3)
    assert list(df.columns) == ["direction", "cosine", "angle", "random_cos2"]
    assert overlap(a, Subspace(e[2:])).angle.tolist() == pytest.approx([90.0, 90.0])
    m = overlap_matrix({"a": a, "b": b, "c": Subspace(e[3])})
    assert len(m) == 9
    assert m.set_index(["a", "b"]).loc[("a", "a"), "mean_cos2"] == pytest.approx(1.0)
    assert m.set_index(["a", "b"]).loc[("a", "c"), "min_angle"] == pytest.approx(90.0)
    with pytest.raises(ValueError, match="a has d_model=4 but b has d_model=3"):
        overlap(a, Subspace(torch.eye(3)[:1]))
    with pytest.raises(TypeError, match="b must be a Subspace"):
        interp.overlap(a, torch.eye(4))


def test_control_labels_and_document_split():
    types = torch.tensor([5, 6, 5, 7, 6, 5])
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    c = control_labels(y, types, seed=0)
    assert c[0] == c[2] == c[5] and c[1] == c[4]  # one label per token type
    assert set(c.tolist()) <= set(y.tolist())
    assert torch.equal(c, control_labels(y, types, seed=0))
    docs = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    test = split_documents(docs, 5, test_size=0.4, seed=0)
    assert int(test.sum()) == 4 and all(test[docs == d].all() or (~test[docs == d]).all() for d in range(5))
    docs = torch.tensor([0] * 90 + [1] * 5 + [2] * 5)  # one big document: held-out sizes follow positions
    for seed in range(5):
        n_test = int(split_documents(docs, 3, test_size=0.2, seed=seed).sum())
        assert n_test in (5, 10)  # never the 90-position document, never nothing
    assert int(split_documents(torch.tensor([0] * 9 + [1]), 2, test_size=0.9, seed=0).sum()) in (1, 9)
    with pytest.raises(ValueError, match="data holds 1 document; a held-out split by document needs at least 2"):
        split_documents(torch.zeros(3, dtype=torch.long), 1, test_size=0.2, seed=0)
    # documents that gave no position are on neither side: both sides keep positions
    docs = torch.tensor([0] * 40 + [3] * 2)  # documents 1 and 2 gave nothing (all padding or unlabelled)
    for seed in range(8):
        test = split_documents(docs, 4, test_size=0.2, seed=seed)
        assert 0 < int(test.sum()) < len(docs)
    with pytest.raises(ValueError, match="the positions come from 1 document"):
        split_documents(torch.zeros(5, dtype=torch.long), 3, test_size=0.2, seed=0)
