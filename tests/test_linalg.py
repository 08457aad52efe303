"""interp._linalg.solve_spd: correct, and never hangs on two threads (torch 2.13's batched LU
solve does, on a few 576x576 systems)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from interp._linalg import solve_spd

SCRIPT = textwrap.dedent("""
    import torch
    from interp._linalg import solve_spd
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(31, 700, 576, generator=g)
    A = X.transpose(1, 2) @ X / 700 + 1e-3 * torch.eye(576)
    b = torch.randn(31, 576, generator=g)
    w = solve_spd(A, b)
    print(float((A @ w[..., None] - b[..., None]).abs().max() / b.abs().max()))
""")


def test_batched_ridge_solve_finishes_on_two_threads():
    # a subprocess under a timeout: a hang fails the test instead of stalling the suite
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) < 1e-3


def test_matches_a_reference_solve_and_handles_singular_systems():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 50, 8, generator=g, dtype=torch.float64)
    A = X.transpose(1, 2) @ X + 0.1 * torch.eye(8, dtype=torch.float64)
    B = torch.randn(3, 8, 2, generator=g, dtype=torch.float64)
    want = torch.stack([torch.linalg.solve(A[i], B[i]) for i in range(3)])  # one system at a time
    assert torch.allclose(solve_spd(A, B), want, atol=1e-10)
    assert torch.allclose(solve_spd(A[0], B[0, :, 0]), torch.linalg.solve(A[0], B[0, :, 0]), atol=1e-10)
    S = A.clone()
    S[1] = X[1, :5].T @ X[1, :5]  # rank 5 of 8, no ridge: Cholesky fails, the minimum-norm solution
    got = solve_spd(S, B)
    assert torch.allclose(got[1], torch.linalg.pinv(S[1], hermitian=True) @ B[1], atol=1e-8)
    assert torch.allclose(got[0], torch.linalg.solve(A[0], B[0]), atol=1e-10)


# ---- eigenvalues and singular values of degenerate but legal matrices -------------------------
import pytest  # noqa: E402

from interp._linalg import eigvals, svd, svdvals  # noqa: E402


def _degenerate(n: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    u, v = torch.randn(n, 1, generator=g, dtype=torch.float64), torch.randn(1, n, generator=g, dtype=torch.float64)
    P = torch.eye(n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    r = torch.randn(n, n, generator=g, dtype=torch.float64)
    return {"zero": torch.zeros(n, n, dtype=torch.float64), "rank1": u @ v, "constant": torch.full((n, n), 0.3, dtype=torch.float64),
            "permutation": P, "duplicated": torch.cat([r[: n // 2], r[: n // 2]]), "projection": -0.9 * torch.diag((torch.arange(n) < n // 2).double()),
            "tiny": r * 1e-300, "huge": r * 1e300}


@pytest.mark.parametrize("name", list(_degenerate()))
def test_eigvals_of_degenerate_matrices(name):
    M = _degenerate()[name]
    lam = eigvals(M)
    # the eigenvalues' sum is the trace and their product-free invariant sum(l^2) = trace(M^2), exactly
    # in exact arithmetic; in float64 each to the rounding of an n-term sum of |M|'s magnitude
    scale = float(M.abs().max()) or 1.0
    n = M.shape[0]
    tol = 4 * n * n * torch.finfo(torch.float64).eps * scale  # the QR iteration's backward error, n^2 u |M|
    assert abs(float(lam.sum().real) - float(M.trace())) <= n * tol
    assert abs(float(lam.sum().imag)) <= n * tol
    if name == "rank1":
        big = lam[lam.abs().argmax()]
        assert abs(float(big.real) - float(torch.trace(M))) <= n * tol  # the one eigenvalue v.u
    assert torch.isfinite(lam).all()


@pytest.mark.parametrize("name", list(_degenerate()))
def test_singular_values_of_degenerate_matrices(name):
    A = _degenerate()[name]
    U, S, Vh = svd(A)
    scale = float(A.abs().max()) or 1.0
    tol = 4 * A.shape[0] ** 2 * torch.finfo(torch.float64).eps * scale
    assert torch.allclose((U * S) @ Vh, A, atol=tol, rtol=0)
    assert torch.allclose(svdvals(A), S, atol=tol, rtol=0)


def test_a_lapack_failure_is_retried_and_answered(monkeypatch):
    """Which matrices make LAPACK fail to converge depends on the CPU's code path; the retry is
    tested here on every CPU by making the first calls fail."""
    M = _degenerate()["permutation"]
    want = eigvals(M)
    real_eig, real_svd, real_svdvals = torch.linalg.eigvals, torch.linalg.svd, torch.linalg.svdvals
    calls = {"eig": 0, "svd": 0, "svdvals": 0}

    def failing(kind, real):
        def f(*a, **k):
            calls[kind] += 1
            if calls[kind] <= 2:
                raise torch.linalg.LinAlgError("linalg.eigvals: The algorithm failed to converge")
            return real(*a, **k)
        return f

    monkeypatch.setattr(torch.linalg, "eigvals", failing("eig", real_eig))
    got = eigvals(M[None].expand(3, -1, -1))
    assert calls["eig"] >= 3
    key = lambda t: sorted(t.tolist(), key=lambda z: (round(z.real, 9), round(z.imag, 9)))  # noqa: E731
    for row in got:
        assert torch.allclose(torch.tensor(key(row)), torch.tensor(key(want)), atol=1e-12)
    monkeypatch.setattr(torch.linalg, "svd", failing("svd", real_svd))
    monkeypatch.setattr(torch.linalg, "svdvals", failing("svdvals", real_svdvals))
    A = _degenerate()["duplicated"]
    U, S, Vh = svd(A)
    assert torch.allclose((U * S) @ Vh, A, atol=1e-12)
    assert torch.allclose(svdvals(A), real_svdvals(A), atol=1e-12)


def test_non_finite_input_is_refused_by_name():
    M = torch.eye(3, dtype=torch.float64)
    M[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        eigvals(M)


def test_deleting_heads_on_degenerate_heads_give_a_frame():
    """Zero, duplicated, rank-1 and constant heads in one model: find_deleting_heads answers."""
    import interp
    from interp.testing import random_hf_model, tiny_tokenizer

    hf = random_hf_model("gpt2")
    attn = hf.transformer.h[1].attn
    d = hf.config.n_embd
    dh = d // hf.config.n_head
    with torch.no_grad():
        W = attn.c_attn.weight  # [d, 3d]: q | k | v
        W[:, 2 * d: 2 * d + dh] = 0  # head 0: zero OV
        W[:, 2 * d + dh: 2 * d + 2 * dh] = W[:, 2 * d + 2 * dh: 2 * d + 3 * dh]  # head 1 = head 2
        W[:, 2 * d + 3 * dh: 2 * d + 4 * dh] = 0.1  # head 3: constant
        attn.c_proj.weight[dh: 2 * dh] = torch.outer(torch.ones(dh), attn.c_proj.weight[dh])  # rank 1
    model = interp.load(hf, tokenizer=tiny_tokenizer())
    df = interp.find_deleting_heads(model, n_tokens=64, max_tokens=64)
    assert len(df) == model.cfg.n_layers * model.cfg.n_heads
    assert df["score"].notna().all()
