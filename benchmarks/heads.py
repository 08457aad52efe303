"""``find_deleting_heads`` on SmolLM2-135M (target <= 10 s on 2 cores), stage by stage, and
the copy-suppression term against the previous implementation (a ``[tokens, vocab]`` matrix
per head in float64), measured side by side on the same layers and extrapolated to all 30.
Also the head detectors and K-composition, whose times the README quotes."""

from __future__ import annotations

import time

import torch

import interp
from interp.memory import heads as mh


def _old_copy_suppression(model, layer: int, tokens: torch.Tensor) -> torch.Tensor:
    """The previous definition: the exact rank of each token's own logit in its full row."""
    W_V, W_O = mh._head_weights(model, layer)
    W_E, W_U = model.weights.W_E, model.weights.W_U
    out = torch.zeros(W_O.shape[0], dtype=torch.float64)
    for h in range(W_O.shape[0]):
        right = W_O[h].double() @ W_U.double()
        total = 0.0
        for a in range(0, len(tokens), 256):
            tok = tokens[a:a + 256]
            rows = (W_E[tok].double() @ W_V[h].double()) @ right
            own = rows.gather(1, tok[:, None])
            total += float((1 - 2 * (rows < own).double().mean(1)).sum())
        out[h] = total / len(tokens)
    return out


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run(*, old_layers: int = 2) -> list[dict]:
    try:
        model = interp.load("smollm2-135m")
    except Exception as e:  # the package is optional
        return [{"figure": "smollm2 heads", "what": f"not measured: {type(e).__name__}: {e}"}]
    model.run_with_writes("warm up the record path")  # calibration happens once per model, not here
    rows = []
    from interp.heads.data import text_tokens

    toks = text_tokens(model, n_rows=4, n_ctx=128)  # the size of find_deleting_heads' default data
    _, t_rec = _timed(lambda: model.run_with_writes(toks))
    df, total = _timed(lambda: interp.find_deleting_heads(model))
    rows.append({"figure": "smollm2 heads", "what": f"find_deleting_heads (all {len(df)} heads, 512 tokens)",
                 "seconds": total, "ratio": total / 10.0, "target": 1.0, "records_of_512_tokens": total / t_rec,
                 "flagged": ",".join(df.loc[df["flagged"], "label"])})
    rows.append({"figure": "smollm2 heads", "what": f"run_with_writes, 4 x 128 tokens ({model.capture_path} path)",
                 "seconds": t_rec})
    toks = torch.randperm(model.cfg.d_vocab, generator=torch.Generator().manual_seed(0))[:1024]
    stats, t_stats = _timed(lambda: mh._unembed_stats(model))
    _, t_new = _timed(lambda: [mh.copy_suppression(model, ly, toks, stats) for ly in range(model.cfg.n_layers)])
    _, t_old = _timed(lambda: [_old_copy_suppression(model, ly, toks) for ly in range(old_layers)])
    t_old_all = t_old * model.cfg.n_layers / old_layers
    rows.append({"figure": "smollm2 heads", "what": "copy_suppression, all layers: bottleneck / full rows",
                 "seconds": t_new + t_stats, "ratio": (t_new + t_stats) / t_old_all,
                 "old_seconds_extrapolated": t_old_all})
    _, t_null = _timed(lambda: mh.cross_head_null(model))
    rows.append({"figure": "smollm2 heads", "what": "cross-head null (512 pairs)", "seconds": t_null})
    for kind in ("previous_token", "induction"):
        _, t = _timed(lambda kind=kind: interp.head_scores(model, kind))
        rows.append({"figure": "smollm2 heads", "what": f"head_scores({kind!r}), default data", "seconds": t})
    _, t = _timed(lambda: interp.composition_scores(model, kinds="K"))
    rows.append({"figure": "smollm2 heads", "what": "composition_scores(kinds='K'), 270 heads", "seconds": t})
    return rows
