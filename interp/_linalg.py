"""Linear solves that cannot hang.

torch 2.13's CPU build hangs or fails in a batched ``torch.linalg.solve`` (LU with partial
pivoting, oneMKL ``getrf``/``getrs``) of a few 576x576 systems on two threads ("oneMKL ERROR:
Parameter 6 was incorrect on entry to SLASWP"): the row-swap step of the pivoted solve. The
systems interp solves (ridge regression, least squares) are symmetric positive (semi)definite,
so they need no pivoting: ``solve_spd`` factors them by Cholesky, which has no row swaps and
is also ~1.5x faster than LU. A system that is not numerically positive definite (a singular
Gram matrix without ridge) is solved through its eigendecomposition instead, with
eigenvalues below ``rcond`` times the largest treated as zero (the minimum-norm solution).
Every solve in interp goes through this module.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
