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
