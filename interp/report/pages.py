"""The report's component pages: a page (``interp.neuron_page`` / ``interp.head_page``) for the
few components the other stages single out: the neurons with the most negative in/out cosine
and the best previous-token and induction heads."""

from __future__ import annotations

from typing import Any

import pandas as pd

from interp._progress import tqdm
from interp.report.document import Section, Text
from interp.report.resolve import find

INTRO = (
    "One page per component, as a neuron viewer shows it: the examples on which it is most active "
    "(one per context line, so a line repeated across files counts once), the distribution of its "
    "activation (signed: a gated MLP's neurons act in both directions), the tokens its write "
    "promotes and suppresses through the final norm and the unembedding, and the components it "
    "reads from and writes to by weight composition (a screen from the weights, not a finding). "
    "Shown here: the two neurons with the most negative in/out cosine, and the heads that score "
    "highest as previous-token and as induction heads."
)
N_NEURONS = 2
HEAD_KINDS = ("previous_token", "induction")


def chosen(ctx: Any) -> list[str]:
    """The labels the pages are drawn for, from the earlier stages' frames when present."""
    model = ctx.model
    cos = ctx.shared.get("cosines")
    if not isinstance(cos, pd.DataFrame):
        cos = find("neuron_in_out_cosines")(model)
    labels = [f"L{ly}N{n}" for ly, n in cos.sort_values("cosine")[["layer", "neuron"]].head(N_NEURONS).to_numpy()]
    scores = ctx.shared.get("head_scores") or {}
    for kind in HEAD_KINDS:
        df = scores.get(kind)
        if not isinstance(df, pd.DataFrame):
            df = find("head_scores")(model, kind)
        if len(df):
            labels.append(f"L{int(df['layer'].iloc[0])}H{int(df['head'].iloc[0])}")
    return list(dict.fromkeys(labels))


def stage(ctx: Any, section: Section, bar: tqdm) -> None:
    """Pages of the chosen components, from one corpus pass for all of them."""
    s = ctx.settings
    try:
        labels = chosen(ctx)
        bar.update(1)
        pages = find("component_pages")(ctx.model, labels, s.data, max_tokens=max(256, (s.tokens or 2048) // 8),
                                        batch_size=s.batch_size, n_ctx=s.n_ctx, progress=ctx.progress,
                                        head_scores=ctx.shared.get("head_scores"))
    except Exception as e:  # the section degrades visibly, the report goes on
        section.unavailable("Component pages", e)
        return
    ctx.shared["pages"] = pages
    bar.update(1)
    if not pages:
        section.add(Text("No component was singled out by the earlier stages."))
    for page in pages:
        what = "neuron" if page.kind == "neuron" else "head"
        section.attempt(f"{page.label}: {what} page", lambda page=page, what=what: find(f"plots.{what}_page")(page),
                        caption=CAPTIONS[what])
        section.attempt(f"{page.label}: summary", lambda page=page: page.to_frame().T.reset_index().set_axis(
            ["quantity", "value"], axis=1))


CAPTIONS = {
    "neuron": "Histogram: the neuron's activation at every position read (log counts). Bars: the tokens "
              "whose logits its output vector raises and lowers, per unit of activation, through the final "
              "norm's gain and W_U. Tables: its largest and most negative activations, the example token in "
              "brackets; the heads and neurons whose weights read it or that it reads (score: composition or "
              "|cosine|; excess: above the score of random weights).",
    "head": "Histogram: the norm of the head's write at every position. Bars: its detector scores, its rank "
            "among all heads above each, the uniform-attention baseline as a line. Table: the positions where it "
            "writes most, the key each attends to most (how far back, with what weight). OV: for the keys it "
            "attends to, the tokens attending to them promotes; QK: for its query tokens, the key tokens "
            "(seen in the corpus) with the highest token-only attention score.",
}
