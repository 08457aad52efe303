"""``neuron_page``, ``head_page`` and ``component_pages`` (several from one corpus pass)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp import _labels as labels
from interp._checks import check_bool, check_int, check_stream
from interp._threads import with_analysis_threads
from interp.pages import links, tokens
from interp.pages.corpus import Feature, Scan, dedup, scan
from interp.pages.page import HeadPage, NeuronPage, Page
from interp.stats.moments import Histogram

QUANTILES = (0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999)
DETECTORS = ("previous_token", "induction", "duplicate_token", "bos", "self")
N_BINS = 40


def parse(model: Any, name: str, label: Any) -> Feature:
    """``"L18N183"`` (a neuron) or ``"L1H2"`` (a head) as a ``Feature``."""
    return labels.parse(name, label, model.cfg)


def _distribution(s: Scan, j: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(quantiles, histogram)`` of feature ``j``: the exact quantiles of every activation, each
    with the sampled example nearest to it; counts on ``N_BINS`` equal bins from min to max."""
    x = s.values[:, j].double()
    lo, hi = float(x.min()), float(x.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, N_BINS + 1)
    h = Histogram(edges).update(x)
    counts = h.counts[1:-1].clone()
    counts[-1] += h.counts[-1]  # the maximum sits on the last edge: count it in the last bin
    hist = pd.DataFrame(dict(left=edges[:-1], right=edges[1:], n_positions=counts.numpy()))
    q = torch.quantile(x, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    ex = s.examples(j, "sample")
    rows = []
    for level, v in zip(QUANTILES, q):
        if len(ex):
            best = ex.iloc[int((ex["activation"] - v).abs().values.argmin())]
            rows.append(dict(level=level, value=v, activation=best["activation"], token=best["token"],
                             context=best["context"], tokens=best["tokens"], acts=best["acts"], center=best["center"]))
    return pd.DataFrame(rows, columns=["level", "value", "activation", "token", "context", "tokens", "acts",
                                       "center"]), hist


def _stats(s: Scan, j: int) -> dict[str, Any]:
    x = s.values[:, j].double()
    return dict(n_tokens=int(len(x)), mean=float(x.mean()), std=float(x.std(unbiased=False)), min=float(x.min()),
                max=float(x.max()), share_positive=float((x > 0).double().mean()),
                share_negative=float((x < 0).double().mean()))


def _examples(s: Scan, j: int, which: str, k: int) -> pd.DataFrame:
    cols = ["key_token", "key_offset", "key_weight"]
    df = dedup(s.examples(j, which), k, window=s.context)
    return df.drop(columns=cols) if s.features[j].kind == "neuron" else df


def _verdicts(model: Any, layers: list[int], data: Any, kw: dict) -> dict[int, pd.DataFrame]:
    """Per layer, every neuron's in/out cosine and, where the memory chapter measures one on
    ``data``, its deletion verdict (``interp.neuron_verdicts``); the cosines alone otherwise."""
    from interp.memory import neuron_in_out_cosines

    out = {}
    for ly in layers:
        try:
            from interp.memory import neuron_verdicts

            out[ly] = neuron_verdicts(model, data, layers=[ly], **kw)
        except (ImportError, ValueError, TypeError):  # no verdict here (e.g. raw processing): the screen
            out[ly] = neuron_in_out_cosines(model, layers=[ly])
    return out


def _neuron_page(model: Any, s: Scan, j: int, *, top_k: int, n_links: int, W: dict,
                 verdicts: dict[int, pd.DataFrame]) -> NeuronPage:
    f = s.features[j]
    c = model.cfg
    cos = verdicts[f.layer]
    row = cos[cos["neuron"] == f.index].iloc[0]
    summary = dict(label=f.label, kind="neuron", layer=f.layer, neuron=f.index, model=c.name, gated=c.gated,
                   **_stats(s, j), cosine=float(row["cosine"]), cosine_z=float(row["z"]),
                   flagged=bool(row["flagged"]), verdict=row["verdict"] if "verdict" in row.index else None,
                   removed_median=float(row["removed_median"]) if "removed_median" in row.index else None)
    quant, hist = _distribution(s, j)
    promoted, suppressed = tokens.logit_table(model, W["W_out"][f.layer, f.index].float(), top_k)
    reads, writes = links.neuron_links(model, f.layer, f.index, n_links, W)
    frames = dict(top=_examples(s, j, "top", top_k), bottom=_examples(s, j, "bottom", top_k), quantiles=quant,
                  histogram=hist, promoted=promoted, suppressed=suppressed, reads_from=reads, writes_to=writes)
    return NeuronPage(label=f.label, summary=summary, frames=frames)


def _head_page(model: Any, s: Scan, j: int, *, top_k: int, n_links: int, W: dict,
               scores: dict[str, pd.DataFrame]) -> HeadPage:
    f = s.features[j]
    top = _examples(s, j, "top", top_k)
    tok_id = {}
    if model.tokenizer is not None:
        for t in top["key_token"].dropna().tolist() + top["token"].tolist():
            ids = model.tokenizer.encode(t, add_special_tokens=False)
            if len(ids) == 1:
                tok_id.setdefault(t, ids[0])
    keys = list(dict.fromkeys(tok_id[t] for t in top["key_token"].dropna() if t in tok_id))[:8]
    queries = list(dict.fromkeys(tok_id[t] for t in top["token"] if t in tok_id))[:8]
    seen = s.seen
    det = []
    for kind, df in scores.items():
        at = np.flatnonzero(((df["layer"] == f.layer) & (df["head"] == f.index)).to_numpy())
        if len(at):  # head_scores is sorted best first: the position is the rank among all heads
            r = df.iloc[at[0]]
            det.append(dict(kind=kind, score=float(r["score"]), baseline=float(r["baseline"]),
                            flagged=bool(r["flagged"]), rank=int(at[0]) + 1))
    quant, hist = _distribution(s, j)
    reads, writes = links.head_links(model, f.layer, f.index, n_links, W)
    st = _stats(s, j)
    summary = dict(label=f.label, kind="head", layer=f.layer, head=f.index, model=model.cfg.name,
                   n_tokens=st["n_tokens"], mean_write_norm=st["mean"], max_write_norm=st["max"],
                   **{f"{d['kind']}_score": d["score"] for d in det})
    frames = dict(top=top, quantiles=quant, histogram=hist,
                  scores=pd.DataFrame(det, columns=["kind", "score", "baseline", "flagged", "rank"]),
                  ov=tokens.ov_table(model, W, f.layer, f.index, keys, 5),
                  qk=tokens.qk_table(model, W, f.layer, f.index, queries, 5, keys=seen), reads_from=reads, writes_to=writes)
    return HeadPage(label=f.label, summary=summary, frames=frames)


@with_analysis_threads
def component_pages(
    model: Any,
    components: Sequence[str],
    data: Any = "stdlib:val",
    *,
    max_tokens: int = 20_000,
    top_k: int = 10,
    context: int = 8,
    n_links: int = 8,
    batch_size: int = 8,
    n_ctx: int | None = None,
    seed: int = 0,
    progress: bool = True,
    head_scores: dict[str, pd.DataFrame] | None = None,
) -> list[Page]:
    """Pages of several neurons and heads (labels ``"L18N183"``, ``"L1H2"``) from one pass over
    ``data``: a ``NeuronPage`` or ``HeadPage`` each, in the order given (see ``neuron_page``).
    ``head_scores``: ``{kind: interp.head_scores(model, kind)}`` already computed (every head),
    reused for the head pages' detector scores; the kinds it lacks are computed."""
    from interp.probes.sites import check_model

    check_model(model)
    if isinstance(components, str) or not isinstance(components, (list, tuple)) or not components:
        raise TypeError(f"components={components!r} must be a non-empty list of labels such as ['L1N5', 'L0H2']")
    feats = list(dict.fromkeys(parse(model, "components", x) for x in components))
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    top_k = check_int("top_k", top_k, minimum=1)
    context = check_int("context", context, minimum=0)
    n_links = check_int("n_links", n_links, minimum=1)
    seed = check_int("seed", seed)
    check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress)
    check_bool("progress", progress)
    # 4x the examples shown: near-duplicates (one line seen in several documents) are dropped after
    s = scan(model, data, feats, max_tokens=max_tokens, batch_size=batch_size, n_ctx=n_ctx, top_k=4 * top_k,
             context=context, n_samples=256, seed=seed, progress=progress)
    W = links.effective_weights(model)
    heads = [f for f in feats if f.kind == "head"]
    scores: dict[str, pd.DataFrame] = {}
    if heads:
        from interp.heads import head_scores as head_scores_of

        given = head_scores if isinstance(head_scores, dict) else {}
        # every head: the rank is among all
        scores = {k: given[k] if isinstance(given.get(k), pd.DataFrame) else head_scores_of(model, k) for k in DETECTORS}
    verdicts = _verdicts(model, sorted({f.layer for f in feats if f.kind == "neuron"}), data,
                         dict(max_tokens=min(max_tokens, 1024), n_ctx=n_ctx, batch_size=batch_size))
    pages: list[Page] = []
    for j, f in enumerate(feats):
        if f.kind == "neuron":
            pages.append(_neuron_page(model, s, j, top_k=top_k, n_links=n_links, W=W, verdicts=verdicts))
        else:
            pages.append(_head_page(model, s, j, top_k=top_k, n_links=n_links, W=W, scores=scores))
    return pages


@with_analysis_threads
def neuron_page(model: Any, neuron: str, data: Any = "stdlib:val", **kw: Any) -> NeuronPage:
    """One neuron's page, as Neuronpedia shows one, from ``max_tokens`` tokens of ``data``.

    Args:
        neuron: a label, ``"L18N183"``.
        data: texts, a corpus name or a path (as ``interp.neuron_stats``).
        **kw: max_tokens (20,000), top_k (10 examples per list), context (8 tokens each side),
            n_links (8 per direction), batch_size, n_ctx, seed (the quantile sample), progress.
    Returns:
        A ``NeuronPage``: ``to_frame()`` (one row: n_tokens, mean, std, min, max, share_positive,
        share_negative (a gated MLP's activation is signed: both tails are shown), cosine (in/out),
        cosine_z, flagged and verdict, removed_median (``interp.neuron_verdicts`` on ``data``:
        the deletion verdict measured on at most 1,024 tokens; the cosine screen alone where no
        verdict can be measured)); frames ``top``, ``bottom`` (one example per
        context line: the same line in several documents counts once, ``n_duplicates`` says how
        many it stands for), ``quantiles``, ``histogram``, ``promoted`` / ``suppressed`` (its
        output vector through the final norm's gain and ``W_U``), ``reads_from`` / ``writes_to``.
        ``page.save(path)`` / ``interp.pages.Page.load(path)``; ``interp.plots.neuron_page(page)``.
    Examples:
        >>> page = interp.neuron_page(model, "L1N5", max_tokens=5_000, progress=False)
        >>> list(page.top.columns)[:3], page.summary["label"]
        (['rank', 'activation', 'doc'], 'L1N5')
    """
    if not isinstance(neuron, str) or "N" not in neuron:
        raise ValueError(f"neuron={neuron!r} is not a neuron label; pass one like 'L1N5' (heads: interp.head_page)")
    return component_pages(model, [neuron], data, **kw)[0]


@with_analysis_threads
def head_page(model: Any, head: str, data: Any = "stdlib:val", **kw: Any) -> HeadPage:
    """One head's page: where it writes most (its write norm ``|z W_O|``) with the key each query
    attends to most, the distribution of its write norm, its detector scores
    (``interp.head_scores``: previous_token, induction, duplicate_token, bos, self), its OV table
    (for the keys of its top examples: the tokens attending to them promotes) and QK table (for
    the queries of its top examples: the key tokens they seek; token-only, positions left out),
    and the heads it reads from and writes to (Q/K/V composition). Options as ``neuron_page``.

    Examples:
        >>> page = interp.head_page(model, "L1H2", max_tokens=5_000, progress=False)
        >>> page.scores["kind"].tolist()
        ['previous_token', 'induction', 'duplicate_token', 'bos', 'self']
    """
    if not isinstance(head, str) or "H" not in head:
        raise ValueError(f"head={head!r} is not a head label; pass one like 'L1H2' (neurons: interp.neuron_page)")
    return component_pages(model, [head], data, **kw)[0]
