"""Linear algebra that cannot hang or crash on legal weights.

torch 2.13's CPU build hangs or fails in a batched ``torch.linalg.solve`` (LU with partial
pivoting, oneMKL ``getrf``/``getrs``) of a few 576x576 systems on two threads ("oneMKL ERROR:
Parameter 6 was incorrect on entry to SLASWP"): the row-swap step of the pivoted solve. The
systems interp solves (ridge regression, least squares) are symmetric positive (semi)definite,
so they need no pivoting: ``solve_spd`` factors them by Cholesky, which has no row swaps and
is also ~1.5x faster than LU. A system that is not numerically positive definite (a singular
Gram matrix without ridge) is solved through its eigendecomposition instead, with
eigenvalues below ``rcond`` times the largest treated as zero (the minimum-norm solution).
Every solve in interp goes through this module.

Eigenvalues and singular values are iterative (QR/divide-and-conquer), and LAPACK may report
that they "failed to converge" on degenerate but legal matrices (zero, duplicated, rank-1 or
constant heads; which matrices trip it depends on the CPU's code path). ``eigvals``, ``svd`` and
``svdvals`` here never let that reach the user: a zero or non-finite matrix is answered (or
refused) before LAPACK sees it, every matrix is scaled to unit norm (the scale is restored), and
a batch that fails is retried matrix by matrix under a seeded random orthogonal similarity
(``Q M Q^T`` has the same eigenvalues, ``Q A`` the same singular values and left-rotated
vectors) that breaks the structure the iteration stalled on; the singular values fall back to
the eigenvalues of the Gram matrix as a last resort. Every eigen and SVD call in interp goes
through these.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: Seeded orthogonal similarity transforms tried per matrix before the last-resort fallback.
RETRIES = 3


def _orthogonal(n: int, seed: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype=dtype, device=device)


def _scaled(M: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """``(M / s, s)`` with ``s = max|M|`` per matrix (1 where ``M`` is zero); refuses NaN/inf."""
    if not torch.isfinite(M).all():
        raise ValueError(f"{name} holds NaN or inf; the weights or inputs it was built from are not finite")
    s = M.abs().amax((-2, -1), keepdim=True)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return M / s, s


def _per_matrix(fn: Callable[[Tensor], Tensor], M: Tensor, fallback: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """``fn`` on each matrix of ``M`` ``[n, a, b]``; ``fallback`` where it fails."""
    out = []
    for m in M:
        try:
            out.append(fn(m))
        except (torch.linalg.LinAlgError, RuntimeError):
            out.append(fallback(m))
    return out


def eigvals(M: Tensor) -> Tensor:
    """Eigenvalues of square ``M`` ``[..., n, n]`` (complex ``[..., n]``), never a LinAlgError
    for finite input (module docstring). Raises ``ValueError`` for NaN/inf."""
    Ms, s = _scaled(M, "the matrix")
    try:
        lam = torch.linalg.eigvals(Ms)
    except (torch.linalg.LinAlgError, RuntimeError):
        flat = Ms.reshape(-1, *Ms.shape[-2:])
        n = Ms.shape[-1]

        def one(m: Tensor) -> Tensor:
            for k in range(RETRIES):
                q = _orthogonal(n, k, m.dtype, m.device)
                try:
                    return torch.linalg.eigvals(q @ m @ q.T)
                except (torch.linalg.LinAlgError, RuntimeError):
                    continue
            raise torch.linalg.LinAlgError("eigvals did not converge")

        def last(m: Tensor) -> Tensor:  # numpy's LAPACK build, then a tiny seeded perturbation
            import numpy as np
            try:
                return torch.from_numpy(np.linalg.eigvals(m.cpu().numpy())).to(m.device)
            except np.linalg.LinAlgError:
                g = torch.Generator().manual_seed(0)
                e = torch.randn(m.shape, generator=g, dtype=m.dtype).to(m.device) * torch.finfo(m.dtype).eps
                return torch.from_numpy(np.linalg.eigvals((m + e).cpu().numpy())).to(m.device)

        lam = torch.stack(_per_matrix(one, flat, last)).reshape(*Ms.shape[:-1])
    return lam * s.squeeze(-1).to(lam.dtype)


def svd(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD ``(U, S, Vh)`` of ``A`` ``[m, n]``, never a LinAlgError for finite input."""
    As, s = _scaled(A, "the matrix")
    try:
        U, S, Vh = torch.linalg.svd(As, full_matrices=False)
    except (torch.linalg.LinAlgError, RuntimeError):
        U, S, Vh = _svd_retry(As)
    return U, S * s.squeeze(-1), Vh


def _svd_retry(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    m = A.shape[-2]
    for k in range(RETRIES):
        q = _orthogonal(m, k, A.dtype, A.device)
        try:
            U, S, Vh = torch.linalg.svd(q @ A, full_matrices=False)
            return q.T @ U, S, Vh
        except (torch.linalg.LinAlgError, RuntimeError):
            continue
    # last resort: A^T A = V S^2 V^T (squares the condition number; only after every retry failed)
    vals, V = torch.linalg.eigh(A.transpose(-1, -2) @ A)
    vals, V = vals.flip(-1).clamp_min(0), V.flip(-1)
    S = vals.sqrt()
    U = (A @ V) / torch.where(S > 0, S, torch.ones_like(S))
    return U, S, V.transpose(-1, -2)


def svdvals(A: Tensor) -> Tensor:
    """Singular values of ``A`` ``[..., m, n]``, descending; never a LinAlgError for finite input."""
    As, s = _scaled(A, "the matrix")
    try:
        S = torch.linalg.svdvals(As)
    except (torch.linalg.LinAlgError, RuntimeError):
        flat = As.reshape(-1, *As.shape[-2:])
        S = torch.stack([_svd_retry(a)[1] for a in flat]).reshape(*As.shape[:-2], -1)
    return S * s.squeeze(-1)


def solve_spd(A: Tensor, B: Tensor, *, rcond: float | None = None) -> Tensor:
    """Solve ``A X = B`` for symmetric positive (semi)definite ``A``.

    Args:
        A: ``[..., d, d]``, symmetric.
        B: ``[..., d]`` or ``[..., d, k]`` (matching ``A``'s batch axes).
        rcond: relative eigenvalue cut for systems Cholesky refuses (default: ``d`` times the
            dtype's eps).
    Returns:
        X with ``B``'s shape.
    """
    vec = B.dim() == A.dim() - 1
    rhs = B.unsqueeze(-1) if vec else B
    L, info = torch.linalg.cholesky_ex(A)
    X = torch.cholesky_solve(rhs, L)
    bad = info != 0
    if bad.any():  # not positive definite: the minimum-norm solution through eigh
        Ab = A[bad] if A.dim() > 2 else A
        rb = rhs[bad] if A.dim() > 2 else rhs
        vals, vecs = torch.linalg.eigh(Ab)
        cut = (rcond if rcond is not None else A.shape[-1] * torch.finfo(A.dtype).eps)
        keep = vals > cut * vals.amax(-1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
        inv = torch.where(keep, 1.0 / torch.where(keep, vals, torch.ones_like(vals)), torch.zeros_like(vals))
        Xb = vecs @ (inv.unsqueeze(-1) * (vecs.transpose(-1, -2) @ rb))
        if A.dim() > 2:
            X = X.clone()
            X[bad] = Xb
        else:
            X = Xb
    return X.squeeze(-1) if vec else X
