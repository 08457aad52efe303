"""The report's summary: the findings a reader should take away, each computed from the
results the stages left in ``ctx.shared`` and linked to the figure or table it comes from.

A finding whose result is missing (its stage failed, or the model shows nothing there) is
skipped, never invented; the summary keeps the first ``MAX_FINDINGS`` that hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from interp.memory.verdict import MAX_REMOVED, MIN_REMOVED
from interp.report.document import slug

MAX_FINDINGS = 5
#: A probe must beat the current-token lookup by this much to be said to read more than it.
LOOKUP_MARGIN = 0.05
#: A deleter is said to erase on data when its measured removed_fraction is in the range
#: find_deleting_heads judges heads by.
ERASE_MIN, ERASE_MAX = MIN_REMOVED, MAX_REMOVED
#: From this removed_fraction up to ERASE_MIN a deleter erases part of what it reads.
PARTIAL_MIN = 0.05


@dataclass
class Finding:
    """One sentence and where it comes from (a section title and a block title)."""

    text: str
    section: str
    block: str

    @property
    def anchor(self) -> str:
        return f"{slug(self.section)}--{slug(self.block)}"


HEADS = "Attention heads"
PROBES = "Subspace probes and the shared-memory map"
MEMORY = "Memory management"
CAUSAL = "Causal evidence"
DECOMP = "Residual-stream decomposition"


def _heads(sh: dict[str, Any]) -> Finding | None:
    scores = sh.get("head_scores") or {}
    parts = []
    for kind, name in (("previous_token", "previous-token"), ("induction", "induction")):
        df = scores.get(kind)
        if df is not None and len(df) and ("flagged" not in df.columns or bool(df["flagged"].iloc[0])):
            r = df.iloc[0]
            base = f", uniform attention {float(r['baseline']):.2f}" if "baseline" in df.columns else ""
            parts.append(f"{r['label']} is the strongest {name} head (score {float(r['score']):.2f}{base})")
    if not parts:
        return None
    return Finding("; ".join(parts) + ".", HEADS, "Head detector scores")


def _probe(sh: dict[str, Any]) -> Finding | None:
    df = (sh.get("probes") or {}).get("previous_token")
    if df is None or len(df) < 2:
        return None
    d = df.reset_index(drop=True)
    first = d.iloc[0]
    later = d[d["layer"] > first["layer"]]
    best = later.loc[later["accuracy"].idxmax()] if len(later) else first
    lookup = best.get("lookup_accuracy") if "lookup_accuracy" in d.columns else None
    has_lookup = lookup is not None and pd.notna(lookup)
    if has_lookup and best["accuracy"] < lookup + LOOKUP_MARGIN:
        # the probe does no better than guessing the previous token from the current one
        text = (f"The previous token is barely more readable than the current token predicts it: at best "
                f"{best['accuracy']:.2f} held-out accuracy (at {best['site']}), against {lookup:.2f} from the "
                f"current token alone; on this data the stream's previous-token content is mostly what the "
                f"current token implies")
        return Finding(text + ".", PROBES, "Probe accuracy per layer")
    text = (f"The previous token becomes linearly readable at {best['site']}: held-out accuracy "
            f"{best['accuracy']:.2f}, against {first['accuracy']:.2f} at {first['site']}")
    if has_lookup:
        text += f" and {lookup:.2f} from the current token alone"
    return Finding(text + ".", PROBES, "Probe accuracy per layer")


def _writers(sh: dict[str, Any]) -> Finding | None:
    w = sh.get("writers")
    if w is None or not len(w):
        return None
    top = w[w["kind"] != "neuron"].sort_values("signed_share", ascending=False).head(2)
    at = w.attrs.get("read_point", "the probe's site")
    names = " and ".join(f"{r.component} ({r.signed_share:.0%})" for r in top.itertuples())
    return Finding(f"What the previous-token subspace holds at {at} is written mostly by {names} "
                   "(signed share; only components before that point count).", PROBES,
                   "Writers of the previous-token subspace")


def _ablation(sh: dict[str, Any]) -> Finding | None:
    df = sh.get("ablation")
    if df is None or "metric" not in getattr(df, "columns", []):
        return None
    loss = df[df["metric"] == "loss"]
    if not len(loss):
        return None
    r = loss.iloc[0]
    return Finding(f"Replacing the previous-token subspace by its mean raises the next-token loss by "
                   f"{r['delta']:.2f} nats/token; a random subspace of the same size: {r['random_delta']:.2f}.",
                   PROBES, "Ablating the previous-token subspace")


def _counted(parts: list[tuple[int, str]]) -> str:
    """``"3 erase, 12 erase part"``: the non-zero counts only, joined with "and"."""
    said = [f"{n:,} {what}" for n, what in parts if n]
    return said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1] if said else ""


def _sinks(sh: dict[str, Any]) -> Finding | None:
    """The sink finding, when a massive token draws most of some layer's attention."""
    df = sh.get("sinks")
    if df is None or not len(df) or "massive" not in df.columns:
        return None
    m = df[df["massive"]]
    if not len(m) or not (m["attention"].fillna(0) >= 0.5).any():
        return None
    key = m.sort_values("norm_ratio", ascending=False)["sink"].iloc[0]
    g = m[m["sink"] == key]
    first, peak = g.iloc[0], g.loc[g["norm_ratio"].idxmax()]
    att = g.dropna(subset=["attention"])
    where = "The first position" if key == "position 0" else f"The token {key!r}"
    text = (f"{where} is an attention sink: from layer {int(first['layer'])} its stream norm is "
            f"{first['norm_ratio']:.0f}x the median token's (up to {peak['norm_ratio']:.0f}x, {peak['norm']:,.0f}, "
            f"mostly in dimension {int(peak['dim'])})")
    if len(att):
        a = att.loc[att["attention"].idxmax()]
        text += f", and layer {int(a['layer'])}'s heads put {a['attention']:.0%} of their attention on it"
    return Finding(text + ".", MEMORY, "Attention sinks")


def _memory(sh: dict[str, Any]) -> Finding | None:
    """Verdict counts measured on data (never the screen's), the screen's precision, the top deleter."""
    cos = sh.get("cosines")
    if cos is None or "verdict" not in cos.columns or (cos["verdict"] == "unmeasured").all():
        return None
    v = cos["verdict"].value_counts()
    n = len(cos)
    lo, hi = cos.attrs.get("min_removed", ERASE_MIN), cos.attrs.get("max_removed", ERASE_MAX)
    deleting = int(v.get("deleting", 0))
    null = cos.attrs.get("expected_false_positives")
    tokens = cos.attrs.get("n_tokens_data")
    on = f"On {tokens:,} tokens, " if tokens else "On the data, "
    if deleting:
        text = (f"{on}{deleting:,} of {n:,} neurons {'erase what they read' if deleting != 1 else 'erases what it reads'}"
                f" (the median firing token loses "
                f"{lo:.0%}-{hi:.0%} of the stream's component along the input vector)")
        if null is not None:
            text += (f"; the same measurement on the model's own weights with the pairing broken finds {int(null):,}"
                     if null else "; the same measurement on the model's own weights with the pairing broken finds none")
    else:
        text = f"{on}no neuron erases what it reads (no median firing token loses {lo:.0%} of its input component)"
    k_p, k_a, k_c = (int(v.get(x, 0)) for x in ("partial", "amplifying", "coupled"))
    rest = _counted([(k_p, "erase part of it" if k_p != 1 else "erases part of it"),
                     (k_a, "amplify it" if k_a != 1 else "amplifies it"),
                     (k_c, "overshoot or act both ways" if k_c != 1 else "overshoots or acts both ways")])
    if rest:
        text += f"; {rest}"
    prec = [p for p in cos.attrs.get("screen_precision", []) if not p.get("screen_flags")]
    if prec:
        p = prec[0]
        text += (f". The in/out cosine is a screen: of the {p['n']} most negative, {p['erasing']} erase"
                 if p["erasing"] else f". The in/out cosine is a screen: none of the {p['n']} most negative erase")
        flags = [q for q in cos.attrs.get("screen_precision", []) if q.get("screen_flags")]
        if flags and flags[0]["n"] > p["n"]:
            q = flags[0]
            text += (f", and of the {q['n']:,} past its null threshold, {q['erasing']:,}" if q["erasing"]
                     else f", nor do any of the {q['n']:,} past its null threshold")
    if deleting:
        top = cos[cos["verdict"] == "deleting"].sort_values("removed_median", ascending=False).iloc[0]
        text += (f"; {top['label']} removes {top['removed_median']:.0%} on the median firing token "
                 f"(10-90%: {top['removed_q10']:.0%} to {top['removed_q90']:.0%})")
    heads = sh.get("deleting_heads")
    if heads is not None and "verdict" in heads.columns:
        d = heads[heads["verdict"] == "deleting"]
        if len(d):
            h = d.iloc[0]
            text += (f". {len(d)} of {len(heads)} heads {'erase' if len(d) != 1 else 'erases'} what "
                     f"{'they read' if len(d) != 1 else 'it reads'}; {h['label']} removes "
                     f"{h['removed_median']:.0%} (attention to itself {h['self_attention']:.2f}, to sinks "
                     f"{h['sink_attention']:.2f})")
        else:
            text += f". No head's write removes {lo:.0%} of what it reads on the median token"
    block = "Screen against verdict"
    return Finding(text + ".", MEMORY, block)


def _managers(sh: dict[str, Any]) -> Finding | None:
    """Entropy and prediction/suppression neurons, when any is found."""
    ent, pred = sh.get("entropy"), sh.get("prediction")
    parts = []
    if ent is not None and "verdict" in ent.columns:
        e = ent[ent["verdict"] == "entropy"]
        if len(e):
            r = e.iloc[0]
            parts.append(f"{len(e)} entropy neuron{'s' if len(e) > 1 else ''} ({r['label']}: {r['rho']:.0%} of its "
                         f"output in the unembedding's null space, {r['norm_mediated']:.0%} of its effect on the loss "
                         "through the final norm)")
    if pred is not None and "kind" in pred.columns:
        for kind in ("suppression", "prediction"):
            k = pred[pred["kind"] == kind]
            if len(k):
                r = k.iloc[0]
                parts.append(f"{len(k)} {kind} neuron{'s' if len(k) > 1 else ''} in the last layers ({r['label']} "
                             f"{'lowers' if kind == 'suppression' else 'raises'} {r['top_token']!r}, kurtosis "
                             f"{r['kurtosis']:.0f})")
    if not parts:
        return None
    block = "Entropy neurons" if parts[0].endswith(")") and "entropy" in parts[0] else "Prediction and suppression neurons"
    return Finding("The model has " + "; ".join(parts) + ".", MEMORY, block)


def _patching(sh: dict[str, Any]) -> Finding | None:
    df = sh.get("patching")
    if df is None or "effect" not in getattr(df, "columns", []) or not len(df):
        return None
    top = df.sort_values("effect", ascending=False).head(2)
    names = " and ".join(f"{r.effect:.0%} ({r.component})" for r in top.itertuples())
    return Finding(f"Patching a single head's clean output into the corrupted example recovers {names} of the "
                   "clean logit difference.", CAUSAL, "Head patching of the example's answer")


def _deletion_effect(sh: dict[str, Any]) -> Finding | None:
    df = sh.get("deletion_effect")
    if df is None or "role" not in getattr(df, "columns", []):
        return None
    d = df[df["role"] == "deleter"].dropna(subset=["change"])
    if not len(d):
        return None
    r = d.loc[d["change"].abs().idxmax()]
    ctrl = f" (random neurons: {r['control_change']:+.3g})" if "control_change" in d.columns else ""
    return Finding(f"Ablating {r['deleter']} changes what survives along its direction at {r['site']} by "
                   f"{r['change']:+.3g}{ctrl}.", CAUSAL, "Deletion effect of the top deleters")


def _lens(sh: dict[str, Any]) -> Finding | None:
    lens = sh.get("lens")
    if lens is None or "kl_to_final" not in lens.columns:
        return None
    g = lens.groupby("layer", sort=True)["kl_to_final"].mean()
    if len(g) < 2:
        return None
    return Finding(f"On the example, the stream's prediction approaches the model's own through the layers: "
                   f"mean KL to the final distribution {g.iloc[0]:.2f} nats before layer {int(g.index[0])}, "
                   f"{g.iloc[-2]:.2f} before layer {int(g.index[-2])}.", DECOMP, "Logit lens")


#: In order of priority: the shared-memory story first.
FINDINGS: tuple[Callable[[dict[str, Any]], Finding | None], ...] = (
    _sinks, _heads, _probe, _writers, _memory, _patching, _ablation, _deletion_effect, _managers, _lens,
)


def html(found: list[Finding], present: set[str]) -> str:
    """An ordered list of the findings, each linked to its figure when ``present`` holds its id."""
    import html as _html

    items = []
    for f in found:
        link = (f' <a class="from" href="#{f.anchor}">{_html.escape(f.block)} &rarr;</a>' if f.anchor in present
                else "")
        items.append(f"<li>{_html.escape(f.text)}{link}</li>")
    return f'<ol class="findings">{"".join(items)}</ol>'


def findings(shared: dict[str, Any], *, most: int = MAX_FINDINGS) -> list[Finding]:
    """The first ``most`` findings that the results support."""
    out = []
    for fn in FINDINGS:
        try:
            f = fn(shared)
        except (KeyError, IndexError, ValueError, TypeError):
            f = None
        if f is not None:
            out.append(f)
        if len(out) == most:
            break
    return out


__all__ = ["FINDINGS", "Finding", "MAX_FINDINGS", "findings", "html"]
