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

from interp.memory.heads import MAX_REMOVED, MIN_REMOVED
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


def _memory(sh: dict[str, Any]) -> Finding | None:
    cos, ev = sh.get("cosines"), sh.get("evidence")
    if cos is None or "flagged" not in cos.columns:
        return None
    n, total = int(cos["flagged"].sum()), len(cos)
    expected = cos.attrs.get("expected_false_positives")
    text = (f"{n:,} of {total:,} neurons ({n / max(total, 1):.0%}) have an input and output vector pointing "
            f"against each other, past the null's threshold")
    text += f" (random vector pairs: {float(expected):.1f} expected)" if expected is not None else ""
    if "threshold" in cos.columns and n:
        mirror = int((cos["cosine"] > -cos["threshold"]).sum())  # as far on the amplifying side
        if mirror >= n / 2:  # as many amplifying as deleting: the weights are coupled, not deleting
            text += (f"; {mirror:,} lie as far on the positive side, so the in/out cosine alone marks a "
                     "coupling, not erasure")
        else:
            text += f"; only {mirror:,} lie as far on the positive side"
    neurons = ev[ev["kind"] == "neuron"] if ev is not None and len(ev) and "kind" in ev.columns else None
    if neurons is not None and neurons["removed_fraction"].notna().any():
        per = neurons.drop_duplicates("deleter").dropna(subset=["removed_fraction"])
        rf = per["removed_fraction"]
        erasing = per[rf.between(ERASE_MIN, ERASE_MAX)]
        partial = per[rf.between(PARTIAL_MIN, ERASE_MIN, inclusive="left")]
        counts = [f"{len(erasing)} erase it (remove {ERASE_MIN:.0%}-{ERASE_MAX:.0%})"]
        if len(partial):
            counts.append(f"{len(partial)} erase part of it ({PARTIAL_MIN:.0%}-{ERASE_MIN:.0%})")
        if (rf > ERASE_MAX).any():
            counts.append(f"{int((rf > ERASE_MAX).sum())} overshoot (over {ERASE_MAX:.0%})")
        if (rf < PARTIAL_MIN).any():
            counts.append(f"{int((rf < PARTIAL_MIN).sum())} do not (under {PARTIAL_MIN:.0%}, or amplify)")
        listed = counts[0] if len(counts) == 1 else f"{', '.join(counts[:-1])} and {counts[-1]}"
        text += (f". On data, the {len(per)} most negative remove {rf.min():.0%} to {rf.max():.0%} of the "
                 f"stream's component along their input: {listed}")
        erasing = erasing if len(erasing) else partial  # the clearest case among the strongest kind
        if len(erasing):
            # the clearest case: the erasing neuron whose erased direction has the most
            # concentrated writer (what it deletes has one author), ties to the larger removal
            named = neurons[neurons["deleter"].isin(erasing["deleter"]) & (neurons["writer"] != "other")]
            lead = named.sort_values(["share", "removed_fraction"], ascending=False)
            pick = lead["deleter"].iloc[0] if len(lead) else erasing.sort_values(
                "removed_fraction", ascending=False)["deleter"].iloc[0]
            r = erasing[erasing["deleter"] == pick].iloc[0]
            rows = named[named["deleter"] == pick].sort_values("share", ascending=False)
            top = rows.iloc[0] if len(rows) else None
            whom = ("" if top is None else f", mostly what {top['writer']} wrote ({top['share']:.0%})"
                    if top["share"] >= 0.5 else f"; of what it erases, {top['writer']} wrote the largest share "
                    f"({top['share']:.0%})")
            text += f"; {r['deleter']} removes {r['removed_fraction']:.0%}{whom}"
        return Finding(text + ".", MEMORY, "Deletion graph")
    return Finding(text + ".", MEMORY, "In/out cosine of every neuron")


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
    _heads, _probe, _writers, _memory, _patching, _ablation, _deletion_effect, _lens,
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
