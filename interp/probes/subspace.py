"""``Subspace``: an orthonormal basis of residual-stream directions, and the principal
angles between two subspaces.

Examples:
    >>> s = Subspace(torch.randn(3, 64), name="three")
    >>> s.basis.shape
    torch.Size([64, 3])
    >>> torch.allclose(s.remove(s.project(torch.randn(64))), torch.zeros(64), atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp._checks import check_basis, check_bool, check_direction, check_float, check_int, check_memory
from interp._linalg import svd, svdvals


class Subspace:
    """A ``k``-dimensional subspace of the ``d_model``-dimensional residual stream.

    Build one from directions (``Subspace(directions)``, rows ``[k, d_model]`` or one
    ``[d_model]`` vector; they are orthonormalised. Linearly dependent directions are refused,
    since ``k`` would silently shrink; ``drop_dependent=True`` keeps the span instead),
    from a probe (``Subspace.from_probe``), or at random (``Subspace.random``).

    Attributes:
        basis: ``[d_model, k]`` float32 with orthonormal columns.
        name: a label for tables and figures.
        site: where in the stream the subspace was read (a ``Site(layer, where)``; set by
            ``from_probe``, or passed), or None. ``writers`` measures up to this point.
    """

    def __init__(self, directions: Float[Tensor, "k d_model"] | Float[Tensor, " d_model"], *, name: str = "subspace",
                 site: Any = None, drop_dependent: bool = False):
        if not isinstance(directions, Tensor):
            raise TypeError(
                f"directions must be a torch.Tensor [k, d_model] or [d_model], got {type(directions).__name__}"
            )
        if directions.dim() not in (1, 2) or directions.numel() == 0:
            raise ValueError(f"directions has shape {list(directions.shape)}; pass [k, d_model] or [d_model]")
        if not isinstance(name, str):
            raise TypeError(f"name={name!r} must be a str (a label for tables and figures)")
        if check_bool("drop_dependent", drop_dependent):
            d = check_direction("directions", directions, directions.shape[-1]).reshape(-1, directions.shape[-1])
        else:
            d = check_basis("directions", directions)
        U, S, _ = svd(d.double().T)
        rank = int((S > S[0] * 1e-6).sum())
        self.basis = U[:, :rank].float().contiguous()
        self.name = name
        if site is not None and not (isinstance(getattr(site, "layer", None), int)
                                     and getattr(site, "where", None) in ("resid_pre", "resid_mid", "resid_post")):
            raise TypeError(f"site={site!r} must be a Site(layer, where) from interp.probes.sites, or None")
        self.site = site

    @classmethod
    def from_basis(cls, basis: Float[Tensor, "d_model k"], *, name: str = "subspace", site: Any = None) -> Subspace:
        """A subspace spanned by the columns of ``basis`` ``[d_model, k]``."""
        if not isinstance(basis, Tensor) or basis.dim() != 2:
            raise ValueError(f"basis must be a 2-D tensor [d_model, k], got {getattr(basis, 'shape', type(basis))}")
        return cls(basis.T, name=name, site=site)

    @classmethod
    def random(cls, d_model: int, k: int, *, seed: int = 0, name: str | None = None) -> Subspace:
        """A uniformly random ``k``-dimensional subspace (seeded)."""
        d_model, k, seed = check_int("d_model", d_model, minimum=1), check_int("k", k), check_int("seed", seed)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name={name!r} must be a str or None")
        if not 1 <= k <= d_model:
            raise ValueError(f"k={k} must be between 1 and d_model={d_model}")
        # the draw, its QR and the basis: about three k x d_model float32 matrices
        check_memory(f"Subspace.random(d_model={d_model:,}, k={k:,})", 3 * 4 * k * d_model,
                     "pass the model's d_model (model.cfg.d_model) and a smaller k")
        g = torch.Generator().manual_seed(seed)
        return cls(torch.randn(k, d_model, generator=g), name=name or f"random k={k}")

    @classmethod
    def from_probe(
        cls, probe: Any, *, site: int = 0, k: int | None = None, energy: float = 0.9, name: str | None = None
    ) -> Subspace:
        """The top right-singular directions of a fitted probe's ``coef_`` at ``site``.

        For a classifier the class-mean row is removed first (softmax ignores it).
        ``k=None`` keeps the fewest directions that hold ``energy`` of the squared singular
        values. The basis lives in the probe's feature space (the residual stream), and the
        subspace keeps the probe's site there as ``.site`` (when the probe records its sites).
        ``probe``: a fitted ``LinearProbe``, or a ``probe_layers`` frame (its ``attrs["probe"]``).
        """
        from interp.probes.linear import LinearProbe

        if isinstance(probe, pd.DataFrame):
            probe = LinearProbe.from_frame(probe)
        elif isinstance(probe, str):
            probe = LinearProbe.from_attr(probe)
        coef = getattr(probe, "coef_", None)
        if coef is None:
            raise ValueError("probe is not fitted; call fit() (or pass the frame probe_layers returned)")
        coef = coef.reshape(-1, *coef.shape[-2:])
        site = check_int("site", site)
        k = check_int("k", k, minimum=1, allow_none=True)
        energy = check_float("energy", energy, minimum=0, maximum=1, min_open=True)
        if not -coef.shape[0] <= site < coef.shape[0]:
            raise ValueError(f"site={site} out of range: the probe has {coef.shape[0]} site(s)")
        W = coef[site].double()
        if W.shape[0] > 1:
            W = W - W.mean(0, keepdim=True)
        _, S, Vh = svd(W)
        if k is None:
            if not 0 < energy <= 1:
                raise ValueError(f"energy={energy!r} must be in (0, 1]")
            cum = S.pow(2).cumsum(0) / S.pow(2).sum().clamp_min(1e-300)
            k = int((cum < energy - 1e-12).sum()) + 1
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(S):
            raise ValueError(f"k={k!r} must be an int in 1..{len(S)} (the probe's rank bound)")
        sites = getattr(probe, "sites_", None)
        where = sites[site] if sites else None
        if name is None:
            name = f"probe {where.label}" if where is not None else f"probe site {site}"
        return cls(Vh[:k].float(), name=name, site=where)

    # ---- geometry ----------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.basis.shape[1]

    @property
    def d_model(self) -> int:
        return self.basis.shape[0]

    def __repr__(self) -> str:
        at = f", site={self.site.label}" if self.site is not None else ""
        return f"Subspace({self.name!r}, k={self.k}, d_model={self.d_model}{at})"

    def check(self, d_model: int, what: str = "the model") -> None:
        """Raise ``ValueError`` unless this subspace lives in ``d_model`` dimensions."""
        if self.d_model != d_model:
            raise ValueError(
                f"subspace {self.name!r} has d_model={self.d_model} but {what} has d_model={d_model}; "
                "build the subspace from this model's stream"
            )

    def _B(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor [..., d_model], got {type(x).__name__}")
        self.check(x.shape[-1], "x")
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return self.basis.to(device=x.device, dtype=dtype)

    def coords(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... k"]:
        """Coordinates of ``x`` in the basis: ``x @ basis``."""
        return x @ self._B(x)

    def project(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The part of ``x`` inside the subspace."""
        B = self._B(x)
        return (x @ B) @ B.T

    def remove(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The part of ``x`` orthogonal to the subspace."""
        return x - self.project(x)


def _check_subspace(name: str, s: Any) -> Tensor:
    basis = getattr(s, "basis", None)
    if not isinstance(basis, Tensor) or basis.dim() != 2:
        raise TypeError(f"{name} must be a Subspace (or have .basis [d_model, k]), got {type(s).__name__}")
    return basis


def principal_cosines(a: Any, b: Any) -> Tensor:
    """Cosines of the principal angles, descending: ``[min(k_a, k_b)]``."""
    A, B = _check_subspace("a", a).double(), _check_subspace("b", b).double()
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"a has d_model={A.shape[0]} but b has d_model={B.shape[0]}; compare subspaces of one stream")
    return svdvals(A.T @ B.to(A.device)).clamp(0, 1)


def overlap(a: Subspace, b: Subspace) -> pd.DataFrame:
    """Principal angles between subspaces ``a`` and ``b``.

    Returns one row per angle, smallest angle first:
        direction:int (0 = the smallest angle), cosine:float, angle:float (degrees), random_cos2:float (the mean squared
        cosine expected for random subspaces of these dimensions, ``max(k_a, k_b) / d_model``).
    """
    cos = principal_cosines(a, b)
    d = a.basis.shape[0]
    return pd.DataFrame({
        "direction": range(len(cos)),
        "cosine": cos.numpy(),
        "angle": torch.rad2deg(torch.arccos(cos)).numpy(),
        "random_cos2": min(1.0, max(a.basis.shape[1], b.basis.shape[1]) / d),
    })


def overlap_matrix(subspaces: Mapping[str, Subspace] | Sequence[Subspace]) -> pd.DataFrame:
    """Pairwise overlap of several subspaces, long format (every ordered pair).

    Returns:
        a:str, b:str (names), k_a:int, k_b:int, min_angle:float (degrees, the smallest
        principal angle), mean_cos2:float (mean squared cosine over the principal angles:
        1 for nested subspaces, about ``max(k_a, k_b) / d_model`` for random ones),
        random_cos2:float (that chance level).
    """
    if isinstance(subspaces, Mapping):
        items = list(subspaces.items())
    else:
        items = [(getattr(s, "name", str(i)), s) for i, s in enumerate(subspaces)]
    if not items:
        raise ValueError("subspaces is empty; pass a dict or list of Subspace objects")
    rows = []
    for na, a in items:
        for nb, b in items:
            cos = principal_cosines(a, b)
            ka, kb, d = a.basis.shape[1], b.basis.shape[1], a.basis.shape[0]
            rows.append(dict(
                a=na, b=nb, k_a=ka, k_b=kb, min_angle=float(torch.rad2deg(torch.arccos(cos[0]))),
                mean_cos2=float(cos.pow(2).mean()), random_cos2=min(1.0, max(ka, kb) / d),
            ))
    return pd.DataFrame(rows)
