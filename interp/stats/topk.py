"""Top-k samples per feature, with a key per sample and a payload (e.g. context windows),
merged exactly.

Order is total: larger value first, ties broken by the smaller key. So the top k of a
union is the top k of the parts' top k's, whatever the split, and merging equals one
scan over all samples, bit for bit. Keys are int64 and unique per sample (``neuron_stats``
packs ``(document, row, position)`` into one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.stats.base import Statistic
from interp.stats.distributed import all_gather_tensor, all_reduce_tensors, is_distributed, rank_and_world

EMPTY_KEY = torch.iinfo(torch.int64).max


def _order(values: Tensor, keys: Tensor, k: int) -> Tensor:
    """Indices ``[F, k]`` of the top ``k`` along dim 1: value descending, key ascending."""
    by_key = keys.argsort(dim=1, stable=True)
    by_value = values.gather(1, by_key).argsort(dim=1, descending=True, stable=True)
    return by_key.gather(1, by_value)[:, :k]


class TopK(Statistic):
    """The ``k`` largest values of each of ``n_features`` features, with their keys and payloads.

    State: ``values`` ``[F, k]`` (descending; ``-inf`` in empty slots), ``keys`` ``[F, k]``
    int64 (``EMPTY_KEY`` in empty slots), ``payload``: name -> ``[F, k, ...]`` tensors filled
    by the ``payload`` callable of ``update`` for the samples that enter the top k.
    """

    def __init__(self, n_features: int, k: int, *, payload_shapes: dict[str, tuple[tuple[int, ...], torch.dtype, Any]]
                 | None = None, dtype: torch.dtype = torch.float32, device: Any = None):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be an int >= 1")
        self.n_features, self.k = int(n_features), k
        self.values = torch.full((self.n_features, k), -float("inf"), dtype=dtype, device=device)
        self.keys = torch.full((self.n_features, k), EMPTY_KEY, dtype=torch.int64, device=device)
        self.payload: dict[str, Tensor] = {
            name: torch.full((self.n_features, k, *shape), fill, dtype=dt, device=device)
            for name, (shape, dt, fill) in (payload_shapes or {}).items()
        }

    def update(self, x: Float[Tensor, "n F"], keys: Int[Tensor, " n"],
               payload: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None, *,
               col_max: Tensor | None = None) -> TopK:
        """Add samples ``x`` ``[n, F]`` with unique ``keys`` ``[n]``. ``payload(features,
        samples)`` gets ``[m]`` index pairs of the samples that enter the top k and returns
        ``[m, ...]`` tensors for them (e.g. their context windows). ``col_max``: ``x.amax(0)``
        when the caller has it already."""
        n = x.shape[0]
        if x.dim() != 2 or x.shape[1] != self.n_features or keys.shape != (n,):
            raise ValueError(f"x has shape {tuple(x.shape)} and keys {tuple(keys.shape)}; pass x [n, "
                             f"{self.n_features}] and keys [n]")
        if n == 0:
            return self
        x = x.to(self.values)
        keys = keys.to(self.keys.device)
        kth = self.values[:, -1]
        if bool(torch.isfinite(kth).all()):
            # Full: only samples at or above a feature's k-th value can enter (ties decided by key).
            col_max = x.amax(0) if col_max is None else col_max.to(x)
            rows = (col_max >= kth).nonzero()[:, 0]  # only the features with candidates
            if len(rows):
                sub = x[:, rows]
                sample, local = (sub >= kth[rows]).nonzero(as_tuple=True)
                self._absorb_flat(local, sample, sub[sample, local], keys[sample], payload, rows=rows)
            return self
        j = min(self.k, n)
        xt = x.T  # [F, n]
        vals, idx = xt.topk(j, dim=1)
        tied = (xt >= vals[:, -1:]).sum(1) > j  # ties at the j-th value: topk keeps any of them
        if bool(tied.any()):
            rows = tied.nonzero()[:, 0]
            sub = xt[rows]
            idx_t = _order(sub, keys.expand(len(rows), n), j)
            idx[rows], vals[rows] = idx_t, sub.gather(1, idx_t)
        feat = torch.arange(self.n_features, device=idx.device).repeat_interleave(j)
        self._absorb_flat(feat, idx.reshape(-1), vals.reshape(-1), keys[idx.reshape(-1)], payload)
        return self

    def _absorb_flat(self, feat: Tensor, sample: Tensor, vals: Tensor, keys: Tensor,
                     payload: Callable[[Tensor, Tensor], dict[str, Tensor]] | None,
                     rows: Tensor | None = None) -> None:
        """Merge candidates given as flat ``[m]`` (feature, sample, value, key) lists; with
        ``rows``, ``feat`` indexes into ``rows`` and only those features are touched."""
        if rows is not None:
            sub = TopK.__new__(TopK)
            sub.n_features, sub.k = len(rows), self.k
            sub.values, sub.keys = self.values[rows], self.keys[rows]
            sub.payload = {name: t[rows] for name, t in self.payload.items()}

            def sub_payload(f: Tensor, j: Tensor) -> dict[str, Tensor]:
                return payload(rows[f], j) if payload is not None else {}

            sub._absorb_flat(feat, sample, vals, keys, sub_payload)
            self.values[rows], self.keys[rows] = sub.values, sub.keys
            for name, t in sub.payload.items():
                self.payload[name][rows] = t
            return
        F, k = self.n_features, self.k
        own = torch.arange(F, device=feat.device).repeat_interleave(k)
        f_all = torch.cat([own, feat])
        v_all = torch.cat([self.values.reshape(-1), vals])
        k_all = torch.cat([self.keys.reshape(-1), keys])
        o = k_all.argsort(stable=True)
        o = o[v_all[o].argsort(descending=True, stable=True)]
        o = o[f_all[o].argsort(stable=True)]  # grouped by feature; value desc, key asc within
        # each feature has at least k entries (its own slots), so the first k of each group win
        counts = torch.bincount(f_all, minlength=F)
        start = torch.cumsum(counts, 0) - counts
        win = o[(start.unsqueeze(1) + torch.arange(k, device=o.device)).reshape(-1)].reshape(F, k)
        new = win >= F * k  # slots filled by a candidate
        self.values, self.keys = v_all[win], k_all[win]
        if not self.payload:
            return
        old = win.clamp_max(F * k - 1)
        for name, t in self.payload.items():
            flat = t.reshape(F * k, *t.shape[2:])
            self.payload[name] = flat[old.reshape(-1)].reshape(t.shape)
        if bool(new.any()):
            c = win[new] - F * k
            extra = payload(feat[c], sample[c]) if payload is not None else {}
            for name, t in self.payload.items():
                t[new] = extra[name].to(t)

    def _absorb(self, vals: Tensor, keys: Tensor, payload: dict[str, Tensor]) -> None:
        values = torch.cat([self.values, vals.to(self.values)], 1)
        all_keys = torch.cat([self.keys, keys.to(self.keys.device)], 1)
        order = _order(values, all_keys, self.k)
        self.values, self.keys = values.gather(1, order), all_keys.gather(1, order)
        for name, t in self.payload.items():
            both = torch.cat([t, payload[name].to(t)], 1)
            idx = order.reshape(*order.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
            self.payload[name] = both.gather(1, idx)

    def merge(self, other: TopK) -> TopK:
        self._check_other(other, n_features=self.n_features, k=self.k, names=sorted(self.payload))
        self._absorb(other.values, other.keys, other.payload)
        return self

    @property
    def names(self) -> list[str]:
        return sorted(self.payload)

    def all_reduce(self, group: Any = None) -> TopK:
        """All-gather values and keys (``world * F * k`` of each), merge them in the same
        total order on every rank, then one SUM all-reduce moves each winner's payload from
        the rank that holds it (the others add zeros)."""
        if not is_distributed(group):
            return self
        rank, world = rank_and_world(group)
        vals = all_gather_tensor(self.values, group=group, what="TopK values")  # [world, F, k]
        keys = all_gather_tensor(self.keys, group=group, what="TopK keys")
        V = vals.permute(1, 0, 2).reshape(self.n_features, world * self.k)
        K = keys.permute(1, 0, 2).reshape(self.n_features, world * self.k)
        order = _order(V, K, self.k)
        owner, slot = order // self.k, order % self.k
        mine = owner == rank
        for name, t in self.payload.items():
            idx = slot.reshape(*slot.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
            got = t.gather(1, idx)
            keep = mine.reshape(*mine.shape, *([1] * (t.dim() - 2))).expand_as(got)
            contrib = torch.where(keep, got, torch.zeros((), dtype=t.dtype, device=t.device))
            all_reduce_tensors([contrib], "sum", group=group, what=f"TopK payload {name}")
            self.payload[name] = contrib
        self.values, self.keys = V.gather(1, order).contiguous(), K.gather(1, order).contiguous()
        return self

    def __repr__(self) -> str:
        return f"TopK(n_features={self.n_features}, k={self.k}, payload={self.names})"
