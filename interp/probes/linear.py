"""``LinearProbe``: multinomial logistic regression (or ridge regression) in torch,
batched so that probes at many sites (layers) train in one pass.

Follows scikit-learn: ``__init__`` stores parameters, ``fit`` returns ``self``, learned
tensors end in ``_``.

Examples:
    >>> X = torch.randn(2, 500, 16)            # [site, n, d_model]: two sites, one label vector
    >>> y = (X[1, :, 0] > 0).long()             # decodable at site 1 only
    >>> LinearProbe(top_k=2).fit(X, y).score(X, y)   # doctest: +SKIP
    tensor([0.5..., 1.0...])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import records
from interp._checks import check_choice, check_float, check_int
from interp._linalg import solve_spd
from interp.probes.labels import IGNORE
from interp.stats.moments import Covariance

log = logging.getLogger(__name__)

OTHER = -1
TASKS = ("classify", "regress")
SOLVERS = ("lbfgs", "adam")
SCALINGS = ("global", "feature", None)


class LinearProbe:
    """A linear read-out of a label from residual-stream vectors.

    Args (all keyword-only):
        task: ``"classify"`` (default): multinomial logistic regression over the ``top_k``
            most frequent training labels plus one ``OTHER`` (-1) class for the rest.
            ``"regress"``: ridge regression on the label's value, closed form.
        top_k: classes kept for ``"classify"`` (ties broken towards smaller labels).
        weight_decay: L2 penalty on the weights of scaled features (mean over samples
            of the loss plus ``weight_decay / 2 * ||W||^2``).
        solver: ``"lbfgs"`` (full batch, default) or ``"adam"`` (full batch).
        max_iter: optimiser iterations; lr: Adam's learning rate.
        scaling: how features are scaled before the penalty applies (after centring):
            ``"global"`` (default): one scale per site, the RMS of the centred features, which
            keeps the stream's geometry (the residual basis is not privileged, so the penalty
            and the probe's singular directions do not depend on it); ``"feature"``: each
            feature to unit variance (rotation-dependent: low-variance directions get cheap);
            ``None``: raw features. The learned ``coef_`` always acts on raw features.

    Learned (``S`` sites when ``X`` is ``[S, n, d]``; no leading axis when ``X`` is ``[n, d]``):
        classes_: ``[C]`` label values; the last is ``OTHER`` when labels beyond the top K exist.
            ``"regress"``: ``tensor([0])``, a single output.
        coef_: ``[S, C, d]``; intercept_: ``[S, C]``. logits = ``X @ coef_.T + intercept_``.
        mean_, scale_: ``[S, d]`` feature statistics; n_features_in_; n_iter_; loss_: ``[S]``.
    """

    def __init__(
        self,
        *,
        task: str = "classify",
        top_k: int = 50,
        weight_decay: float = 1e-3,
        solver: str = "lbfgs",
        max_iter: int = 100,
        lr: float = 0.05,
        scaling: str | None = "global",
    ):
        self.task = task
        self.top_k = top_k
        self.weight_decay = weight_decay
        self.solver = solver
        self.max_iter = max_iter
        self.lr = lr
        self.scaling = scaling

    def __repr__(self) -> str:
        return (
            f"LinearProbe(task={self.task!r}, top_k={self.top_k}, weight_decay={self.weight_decay}, "
            f"solver={self.solver!r}, max_iter={self.max_iter})"
        )

    # ---- plain data ----------------------------------------------------------------------
    _PARAMS = ("task", "top_k", "weight_decay", "solver", "max_iter", "lr", "scaling")
    _TENSORS = ("coef_", "intercept_", "mean_", "scale_", "classes_", "loss_")
    _PLAIN = ("n_features_in_", "n_iter_", "_n_sites", "_squeeze", "_has_other")
    KIND = "LinearProbe"

    def _parts(self, prefix: str = "") -> tuple[dict[str, Tensor], dict[str, Any]]:
        meta: dict[str, Any] = {k: getattr(self, k) for k in self._PARAMS}
        tensors = {prefix + k: getattr(self, k) for k in self._TENSORS if hasattr(self, k)}
        meta.update({k: getattr(self, k) for k in self._PLAIN if hasattr(self, k)})
        if hasattr(self, "sites_"):
            meta["sites_"] = [[s.layer, s.where] for s in self.sites_]
        if hasattr(self, "regressor_"):
            sub_t, meta["regressor_"] = self.regressor_._parts(prefix + "regressor_.")
            tensors.update(sub_t)
        return tensors, meta

    @classmethod
    def _from_parts(cls, tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str = "") -> LinearProbe:
        from interp.probes.sites import Site

        probe = cls(**{k: meta[k] for k in cls._PARAMS})
        probe._check_params()
        for k in cls._TENSORS:
            if prefix + k in tensors:
                setattr(probe, k, tensors[prefix + k])
        for k in cls._PLAIN:
            if k in meta:
                setattr(probe, k, meta[k])
        if "sites_" in meta:
            probe.sites_ = [Site(int(ly), str(w)) for ly, w in meta["sites_"]]
        if "regressor_" in meta:
            probe.regressor_ = cls._from_parts(tensors, meta["regressor_"], prefix + "regressor_.")
        if hasattr(probe, "coef_"):
            C, d = probe.coef_.shape[-2:]
            if probe.intercept_.shape[-1] != C or probe.mean_.shape[-1] != d or probe.n_features_in_ != d:
                raise ValueError(f"the probe record's parts disagree (coef_ {list(probe.coef_.shape)}, intercept_ "
                                 f"{list(probe.intercept_.shape)}, mean_ {list(probe.mean_.shape)}); it was damaged "
                                 "or edited: fit the probe again")
        return probe

    def to_attr(self) -> str:
        """The probe as a plain string (base64 of a safetensors blob), for a frame's ``attrs``."""
        return records.to_attr(self.KIND, *self._parts())

    @classmethod
    def from_attr(cls, value: Any) -> LinearProbe:
        tensors, meta = records.from_attr(value, cls.KIND)
        records.check_finite(tensors, "the probe in attrs")
        return cls._from_parts(tensors, meta)

    @classmethod
    def from_frame(cls, df: Any) -> LinearProbe:
        """The fitted probe that ``probe_layers`` keeps in ``df.attrs["probe"]`` (also after
        ``to_pickle`` / ``to_parquet`` and reading back)."""
        value = getattr(df, "attrs", {}).get("probe")
        if value is None:
            raise ValueError("this frame carries no probe; pass a frame that interp.probe_layers returned (or read "
                             "back with pd.read_pickle / pd.read_parquet: to_csv keeps no attrs)")
        return value if isinstance(value, LinearProbe) else cls.from_attr(value)

    def save(self, path: str | Path) -> Path:
        """Write the probe (parameters and learned tensors) as one safetensors file,
        atomically; ``.safetensors`` is added when missing. Returns the path."""
        return records.save_record(path, self.KIND, *self._parts())

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        """Read a probe written by ``save`` (its parts checked against one another)."""
        tensors, meta = records.load_record(path, cls.KIND)
        records.check_finite(tensors, f"path={str(path)!r}")
        return cls._from_parts(tensors, meta)

    # ---- validation --------------------------------------------------------------------
    def _check_params(self) -> None:
        check_choice("task", self.task, TASKS)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("scaling", self.scaling, SCALINGS)
        for name in ("top_k", "max_iter"):
            value = check_int(name, getattr(self, name))
            if value < 1:
                raise ValueError(f"{name}={value!r} must be an int >= 1")
        check_float("weight_decay", self.weight_decay, minimum=0)
        check_float("lr", self.lr, minimum=0, min_open=True)

    def _check_X(self, X: object, fitted: bool) -> tuple[Tensor, bool]:
        if not isinstance(X, Tensor) or not X.is_floating_point():
            raise TypeError(f"X must be a float tensor [n, d] or [site, n, d], got {getattr(X, 'dtype', type(X).__name__)}")
        if X.dim() not in (2, 3):
            raise ValueError(f"X has shape {list(X.shape)}; pass [n, d] or [site, n, d]")
        squeeze = X.dim() == 2
        X = X.unsqueeze(0) if squeeze else X
        if fitted:
            if X.shape[-1] != self.n_features_in_ or X.shape[0] != self._n_sites:
                raise ValueError(
                    f"X has shape {list(X.shape)} but the probe was fit on {self._n_sites} site(s) of "
                    f"{self.n_features_in_} features; pass X of the same layout"
                )
        if not torch.isfinite(X.sum()) and not torch.isfinite(X).all():  # sum first: no [n, d] mask
            raise ValueError("X contains NaN or inf; pass finite features")
        return X, squeeze

    def _check_y(self, y: object, n: int) -> Tensor:
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        if y.shape != (n,):
            raise ValueError(f"y has shape {list(y.shape)} but X has {n} samples; pass y of shape [{n}]")
        if self.task == "classify" and y.is_floating_point():
            raise TypeError(f"y is {y.dtype}; task='classify' needs integer labels (or use task='regress')")
        return y

    # ---- fitting -----------------------------------------------------------------------
    def fit(self, X: Float[Tensor, "*site n d"], y: Int[Tensor, " n"]) -> LinearProbe:
        """Fit on features ``X`` ``[n, d]`` or ``[site, n, d]`` and labels ``y`` ``[n]``
        (shared by all sites). Samples labelled ``IGNORE`` (-100) are dropped."""
        self._check_params()
        X, squeeze = self._check_X(X, fitted=False)
        y = self._check_y(y, X.shape[1]).to(X.device)
        keep = y != IGNORE
        if not keep.all():
            X, y = X[:, keep], y[keep]
        if X.shape[1] < 2:
            raise ValueError(f"X has {X.shape[1]} labelled samples; fit needs at least 2")
        S, n, d = X.shape
        self.n_features_in_ = d
        self._n_sites = S
        self._squeeze = squeeze
        mean = X.mean(1)
        if self.scaling == "feature":
            scale = X.std(1)
            scale = torch.where(scale > 1e-8 * scale.amax(-1, keepdim=True).clamp_min(1e-30), scale, torch.ones_like(scale))
        elif self.scaling == "global":
            scale = X.var(1, unbiased=False).mean(-1).sqrt().clamp_min(1e-30).unsqueeze(-1).expand_as(mean).clone()
        else:
            scale = torch.ones_like(mean)
        self.mean_, self.scale_ = mean, scale
        if self.task == "regress":
            self._fit_ridge(X, y.to(X.dtype))
        else:
            self._fit_logistic(X, y)
        if squeeze:
            self.coef_, self.intercept_ = self.coef_[0], self.intercept_[0]
            self.mean_, self.scale_, self.loss_ = self.mean_[0], self.scale_[0], self.loss_[0]
        return self

    def _classes(self, y: Tensor) -> Tensor:
        vals, counts = torch.unique(y, return_counts=True)
        order = torch.argsort(-counts.double() + vals.double() / (2 * (vals.abs().max() + 1)), stable=True)
        kept = vals[order[: self.top_k]].sort().values
        self._has_other = len(vals) > self.top_k  # by count: a real label -1 is not the OTHER class
        if self._has_other:
            if (vals == OTHER).any():
                raise ValueError(
                    f"y holds the label {OTHER}, which LinearProbe reports for OTHER (the labels beyond the "
                    f"top_k={self.top_k} most frequent of {len(vals)}), so predictions would be ambiguous; shift "
                    f"the labels (e.g. y + 1), or pass top_k={len(vals)} to keep every class"
                )
            kept = torch.cat([kept, torch.tensor([OTHER], device=y.device)])
        return kept

    def _encode(self, y: Tensor) -> Tensor:
        """Class index of each label; labels outside ``classes_`` go to OTHER (or -1 if none)."""
        classes = self.classes_.to(y.device)
        real = classes[:-1] if self._has_other else classes
        idx = torch.searchsorted(real.contiguous(), y.contiguous()).clamp_max(len(real) - 1)
        hit = real[idx] == y
        fallback = len(classes) - 1 if self._has_other else -1
        return torch.where(hit, idx, torch.full_like(idx, fallback))

    def _fit_logistic(self, X: Tensor, y: Tensor) -> None:
        self.classes_ = self._classes(y)
        target = self._encode(y)
        S, n, d = X.shape
        C = len(self.classes_)
        W = torch.zeros(S, d, C, dtype=X.dtype, device=X.device, requires_grad=True)
        b = torch.zeros(S, 1, C, dtype=X.dtype, device=X.device, requires_grad=True)
        inv = (1 / self.scale_).unsqueeze(-1)  # [S, d, 1]
        shift = (self.mean_ / self.scale_).unsqueeze(1)  # [S, 1, d]
        tgt = target.expand(S, n).reshape(-1)

        def loss_fn() -> Tensor:
            Wr = W * inv
            logits = torch.baddbmm(b - shift @ W, X, Wr)
            ce = torch.nn.functional.cross_entropy(logits.reshape(S * n, C), tgt, reduction="sum") / n
            return ce + 0.5 * self.weight_decay * W.pow(2).sum()

        with torch.enable_grad():
            if self.solver == "lbfgs":
                opt = torch.optim.LBFGS([W, b], lr=1, max_iter=self.max_iter, history_size=20,
                                        line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

                def closure() -> Tensor:
                    opt.zero_grad()
                    loss = loss_fn()
                    loss.backward()
                    return loss

                opt.step(closure)
                self.n_iter_ = int(opt.state[opt._params[0]].get("n_iter", self.max_iter))
            else:
                opt = torch.optim.Adam([W, b], lr=self.lr)
                for _ in range(self.max_iter):
                    opt.zero_grad()
                    loss_fn().backward()
                    opt.step()
                self.n_iter_ = self.max_iter
        W, b = W.detach(), b.detach()
        Wr = W * inv
        self.coef_ = Wr.transpose(1, 2).contiguous()  # [S, C, d]
        self.intercept_ = (b - shift @ W)[:, 0]  # [S, C]
        with torch.no_grad():
            logits = self._logits(X)
            self.loss_ = torch.stack([
                torch.nn.functional.cross_entropy(logits[s], target) for s in range(S)
            ])

    def _fit_ridge(self, X: Tensor, y: Tensor) -> None:
        S, n, d = X.shape
        self.classes_ = torch.tensor([0])
        self._has_other = False
        sc = self.scale_
        # The feature covariance and its covariance with y, as a mergeable statistic (centred
        # chunk by chunk, so no copy of X and no cancellation): [S, d, d] and [S, d].
        stat = Covariance(d, lead=(S,), m=1, device=X.device, dtype=X.dtype).update(X, y)
        cov, xy = stat.cov().to(X.dtype), stat.cross_cov()[..., 0].to(X.dtype)
        A = cov / (sc.unsqueeze(-1) * sc.unsqueeze(1)) + self.weight_decay * torch.eye(d, dtype=X.dtype, device=X.device)
        w = solve_spd(A, xy / sc)  # [S, d], in scaled units (Cholesky: a batched LU solve can hang)
        wr = w / self.scale_
        self.coef_ = wr.unsqueeze(1)  # [S, 1, d]
        self.intercept_ = (y.mean() - (self.mean_ * wr).sum(-1)).unsqueeze(-1)  # [S, 1]
        self.n_iter_ = 1
        self.loss_ = (self._logits(X)[..., 0] - y).pow(2).mean(-1)

    # ---- inference ---------------------------------------------------------------------
    def _fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValueError("this LinearProbe is not fitted yet; call fit(X, y) first")

    def _logits(self, X: Tensor) -> Tensor:
        coef = self.coef_.reshape(-1, *self.coef_.shape[-2:]).to(X)
        inter = self.intercept_.reshape(coef.shape[0], 1, -1).to(X)
        return torch.baddbmm(inter, X, coef.transpose(1, 2))

    def decision_function(self, X: Float[Tensor, "*site n d"]) -> Float[Tensor, "*site n C"]:
        """Logits ``[.., n, C]`` (``"regress"``: predictions ``[.., n, 1]``)."""
        self._fitted()
        X, squeeze = self._check_X(X, fitted=True)
        out = self._logits(X)
        return out[0] if squeeze else out

    def predict_proba(self, X: Float[Tensor, "*site n d"]) -> Float[Tensor, "*site n C"]:
        """Class probabilities, columns in ``classes_`` order (``"classify"`` only)."""
        if self.task != "classify":
            raise ValueError("predict_proba needs task='classify'")
        return self.decision_function(X).softmax(-1)

    def predict(self, X: Float[Tensor, "*site n d"]) -> Tensor:
        """Predicted labels (values from ``classes_``; ``OTHER`` = -1) or regression values."""
        out = self.decision_function(X)
        if self.task == "regress":
            return out[..., 0]
        return self.classes_.to(out.device)[out.argmax(-1)]

    def score(self, X: Float[Tensor, "*site n d"], y: Tensor) -> Tensor:
        """Accuracy (``"classify"``; a label outside ``classes_`` counts as ``OTHER``) or R²
        (``"regress"``), per site: ``[site]``, or a 0-d tensor for 2-D ``X``. Samples labelled
        ``IGNORE`` are dropped."""
        self._fitted()
        y = self._check_y(y, X.shape[-2])
        keep = y != IGNORE
        if not keep.all():
            X, y = X[..., keep, :], y[keep]
        y = y.to(X.device)
        if y.numel() == 0:
            raise ValueError("y holds no labelled samples (all -100); nothing to score")
        out = self.decision_function(X)
        if self.task == "regress":
            yf = y.to(out.dtype)
            ss_res = (out[..., 0] - yf).pow(2).sum(-1)
            ss_tot = (yf - yf.mean()).pow(2).sum().clamp_min(1e-12)
            return 1 - ss_res / ss_tot
        return (out.argmax(-1) == self._encode(y)).to(out.dtype).mean(-1)

    def encode(self, y: Tensor) -> Tensor:
        """Index into ``classes_`` of each label (labels outside map to ``OTHER``, or -1)."""
        self._fitted()
        return self._encode(torch.as_tensor(y))
