"""The report's causal stages: attention heads (patterns, detector scores, composition), and
interventions (patching the example's answer, ablating the top deleters), plus the top
activating examples of the deleting neurons.

Every analysis and figure is looked up by name (``resolve.find``), so a part that the
installed interp does not provide shows as "unavailable" and the rest is still built.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from interp._progress import tqdm
from interp.report.document import Section, Text
from interp.report.resolve import find

HEADS_INTRO = (
    "Attention heads move information between positions, through the stream. Detector scores "
    "find the heads that attend to the previous token, to the token after an earlier copy of "
    "the current one (induction: measured on random tokens repeated, so nothing but the repeat "
    "predicts them) and to earlier copies of the same token. Composition scores (Elhage et al. "
    "2021) measure from the weights how much a later head's queries, keys or values read what "
    "an earlier head writes: the previous-token -> induction edge is the shared memory used "
    "n -> n+2."
)
CAUSAL_INTRO = (
    "Everything above is correlational. Here the model is intervened on. Activation patching runs "
    "a corrupted copy of the example, with one head's clean output written in, and measures how "
    "much of the clean answer comes back (0: the corrupt run, 1: the clean run). Deletion is "
    "tested the same way: the top deleting neurons are ablated on real tokens, and the stream's "
    "component along the direction each erases is measured downstream, against random neurons "
    "of the same layer ablated the same way."
)
HEAD_KINDS = ("previous_token", "induction", "duplicate_token")
#: Identifiers tried as the corrupt name in the patching pair (first that fits is used).
ALTERNATIVES = ("items", "data", "nums", "rows", "xs", "seq", "vals", "arr", "lst", "elems", "x", "y")


def _run(section: Section, title: str, fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:
        section.unavailable(title, e)
        return None


def heads(ctx: Any, section: Section, bar: tqdm) -> None:
    """Detector scores per kind, the patterns of the top heads, composition edges."""
    model, s = ctx.model, ctx.settings
    scores: dict[str, pd.DataFrame] = {}
    for kind in HEAD_KINDS:
        df = _run(section, f"Head scores: {kind}", lambda kind=kind: find("head_scores")(model, kind))
        if df is not None:
            scores[kind] = df
    ctx.shared["head_scores"] = scores
    bar.update(1)
    if scores:
        table = pd.concat([df.assign(kind=k) for k, df in scores.items()], ignore_index=True)
        section.attempt("Head detector scores", lambda: head_score_figure(table),
                        caption="Each head's score for each detector (layer x head); the flagged heads "
                                "pass the detector's documented threshold.")
        keep = [c for c in ("kind", "label", "score", "baseline", "null", "flagged") if c in table.columns]
        section.attempt("Top heads per detector",
                        lambda: table.groupby("kind", sort=False).head(3)[keep], max_rows=3 * len(scores))
    bar.update(1)

    top = {k: str(df["label"].iloc[0]) for k, df in scores.items() if len(df)}
    if "previous_token" in top:
        section.attempt(f"Attention pattern of {top['previous_token']} (top previous-token head)",
                        lambda: _pattern(model, s.example, top["previous_token"]),
                        caption="Where each query position (row) attends (column), on the example.")
    if "induction" in top:
        section.attempt(f"Attention pattern of {top['induction']} (top induction head)",
                        lambda: _pattern(model, _repeated(model, s.seed), top["induction"]),
                        caption="On random tokens repeated once: an induction head attends from each token "
                                "of the second copy to the token after its earlier occurrence (the "
                                "off-diagonal stripe).")
    bar.update(1)

    comp = _run(section, "Composition", lambda: find("composition_scores")(model))
    ctx.shared["composition"] = comp
    if comp is not None:
        section.attempt("Strongest composition edges", lambda: find("plots.composition_edges")(comp, top_k=s.top_k),
                        caption=f"The {s.top_k} head -> head edges whose Q-, K- or V-composition score most exceeds "
                                "the random-matrix baseline (Elhage et al. 2021); width is the excess, colour the "
                                "kind; hover an edge's middle for its numbers.")
        section.attempt("Composition scores, strongest first", lambda: comp.head(s.top_k))
    bar.update(1)


def head_score_figure(table: pd.DataFrame) -> Any:
    """Layer x head heatmaps of the detector scores, one panel per kind, flagged heads ringed
    (``interp.plots.head_scores`` when the installed interp has it)."""
    try:
        return find("plots.head_scores")(table)
    except LookupError:
        pass
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from interp.plots.style import SEQUENTIAL, apply, grid_size

    kinds = list(dict.fromkeys(table["kind"]))
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[k.replace("_", " ") for k in kinds],
                        shared_yaxes=True, horizontal_spacing=0.05)
    n_layers, n_heads = int(table["layer"].max()) + 1, int(table["head"].max()) + 1
    for i, kind in enumerate(kinds):
        d = table[table["kind"] == kind]
        z = np.full((n_layers, n_heads), np.nan)
        z[d["layer"].to_numpy(int), d["head"].to_numpy(int)] = d["score"].to_numpy(float)
        text = np.full(z.shape, "", dtype=object)
        for r in d.itertuples():
            text[int(r.layer), int(r.head)] = (f"{r.label} {kind}<br>score {r.score:.3f}"
                                               + (f"<br>uniform {r.baseline:.3f}" if hasattr(r, "baseline") else "")
                                               + (" (flagged)" if getattr(r, "flagged", False) else ""))
        fig.add_trace(go.Heatmap(z=z, x=list(range(n_heads)), y=list(range(n_layers)), coloraxis="coloraxis",
                                 customdata=text, hovertemplate="%{customdata}<extra></extra>"), row=1, col=i + 1)
        if "flagged" in d.columns and d["flagged"].any():
            f = d[d["flagged"]]
            fig.add_trace(go.Scatter(x=f["head"], y=f["layer"], mode="markers", name="flagged", showlegend=i == 0,
                                     marker=dict(symbol="circle-open", size=12, color="#D55E00", line=dict(width=2)),
                                     hoverinfo="skip"), row=1, col=i + 1)
        fig.update_xaxes(title_text="head", dtick=max(1, n_heads // 6), showgrid=False, row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", showgrid=False, dtick=max(1, round(n_layers / 15)))
    fig.update_yaxes(title_text="layer", row=1, col=1)
    width, height = grid_size(n_layers, n_heads, panels=len(kinds), extra_h=190, title="Head detector scores")
    fig.update_layout(title="Head detector scores", coloraxis=dict(colorscale=SEQUENTIAL, cmin=0, cmax=1,
                      colorbar=dict(title=dict(text="score", side="right"))),
                      width=width, height=height, legend=dict(orientation="h", y=-0.18, x=0))
    return apply(fig)


def _pattern(model: Any, text: Any, label: str) -> Any:
    m = re.fullmatch(r"L(\d+)H(\d+)", label)
    if m is None:
        raise ValueError(f"head label {label!r} is not of the form L<layer>H<head>")
    layer, head = int(m.group(1)), int(m.group(2))
    frame = find("pattern_frame")(model, text, layers=[layer], heads=[head])
    return find("plots.attention_pattern")(frame)


def _repeated(model: Any, seed: int, length: int = 24) -> Any:
    """BOS, then ``length`` random tokens, then the same tokens again: ``[1, 1 + 2 length]``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, model.cfg.d_vocab, (1, length), generator=g)
    bos = model.bos_id if model.bos_id is not None else 0
    return torch.cat([torch.full((1, 1), bos), seq, seq], dim=1)


# ---- causal evidence ---------------------------------------------------------------------
def _next_token(model: Any, prompt: str, name: str) -> int | None:
    """The first token ``name`` adds after ``prompt``, when the prompt's own tokens stay put."""
    a = model.to_tokens(prompt).tokens[0].tolist()
    b = model.to_tokens(prompt + name).tokens[0].tolist()
    return b[len(a)] if len(b) > len(a) and b[: len(a)] == a else None


def patching_pair(model: Any, example: str) -> tuple[str, str, str, str, int, int]:
    """A clean / corrupt prompt pair from ``example`` for patching: the clean prompt stops
    just before the last repeat of a name (so the model can predict it from its earlier
    uses), the corrupt one has every earlier use renamed, with the same number of tokens.

    Returns ``(clean, corrupt, name, alternative, clean_answer, corrupt_answer)``: the answers
    are the first token of each name at that point. Raises ``ValueError`` when no pair fits.
    """
    names = re.findall(r"[A-Za-z_]\w*", example)
    seen: set[str] = set()
    for m in reversed(list(re.finditer(r"[A-Za-z_]\w*", example))):
        name = m.group(0)
        if name in seen or names.count(name) < 2 or len(name) < 2:
            seen.add(name)
            continue
        seen.add(name)
        clean = example[: m.start()]
        if name not in clean:
            continue
        n_clean = int(model.to_tokens(clean).tokens.shape[1])
        for alt in ALTERNATIVES:
            if alt in names or alt == name:
                continue
            corrupt = re.sub(rf"\b{re.escape(name)}\b", alt, clean)
            if int(model.to_tokens(corrupt).tokens.shape[1]) != n_clean:
                continue
            good, bad = _next_token(model, clean, name), _next_token(model, corrupt, alt)
            if good is not None and bad is not None and good != bad:
                return clean, corrupt, name, alt, good, bad
    raise ValueError("the example has no name used twice that can be renamed at equal token length; "
                     "pass an example with a repeated identifier")


def causal(ctx: Any, section: Section, bar: tqdm) -> None:
    """Activation patching of the example's answer; the deletion effect of the top deleters."""
    model, s = ctx.model, ctx.settings
    pair = _run(section, "Patching the example's answer", lambda: patching_pair(model, s.example))
    if pair is not None:
        clean, corrupt, name, alt, good, bad = pair
        last = clean.rstrip("\n").splitlines()[-1] if clean.strip() else clean
        g, b = model.decode_token(good), model.decode_token(bad)
        section.add(Text(f"Clean prompt: the example up to the last use of {name!r} (its last line reads "
                         f"{last.strip()!r}); corrupt prompt: the same with every earlier {name!r} renamed "
                         f"{alt!r}. Metric: logit[{g!r}] - logit[{b!r}] at the last position, the first token "
                         "of each name."))
        patch = _run(section, "Patching the example's answer", lambda: find("activation_patching")(
            model, clean, corrupt, by="head", answers=(good, bad), progress=False))
        ctx.shared["patching"] = patch
        if patch is not None:
            section.attempt("Head patching of the example's answer",
                            lambda: find("plots.patching_heads")(patch),
                            caption="Share of the clean logit difference recovered when one head's clean output "
                                    "is patched into the corrupt run (layer x head).")
            cols = [c for c in ("component", "effect", "metric_patched", "metric_clean", "metric_corrupt")
                    if c in patch.columns]
            section.attempt("Heads that carry the answer, by patching effect",
                            lambda: patch.sort_values("effect", ascending=False)[cols].head(10))
    bar.update(1)

    deleters = _top_deleters(ctx, 3)
    if not deleters:
        section.add(Text("No neuron erases on the data (verdict deleting), so there is no deleter to ablate."))
        bar.update(1)
        return
    effect = _run(section, "Deletion effect of the top deleters", lambda: find("deletion_effect")(
        model, deleters, s.data, subspace=ctx.shared.get("previous_token_subspace"),
        max_tokens=max(256, s.tokens // 8), batch_size=s.batch_size, n_ctx=s.n_ctx, seed=s.seed,
        progress=ctx.progress))
    ctx.shared["deletion_effect"] = effect
    if effect is not None:
        section.attempt("Deletion effect of the top deleters", lambda: find("plots.deletion_effect")(effect),
                        caption=f"The top deleters ({TOP_RULE}): the stream's component along the direction each "
                                "erases, at each downstream site, with it in place (clean) and ablated; survival "
                                "is a ratio to the component before the deleter (1 intact, 0 erased, below 0 "
                                "reversed, below -1 reversed and larger than it was). Right: the change, against "
                                "random neurons of the same layer ablated the same way (grey: their mean ± 2 std).")
        cols = [c for c in ("deleter", "site", "n_tokens", "survival_clean", "survival_ablated", "change",
                            "predicted", "control_change", "control_std") if c in effect.columns]
        rows = effect[effect["role"] == "deleter"] if "role" in effect.columns else effect
        section.attempt("Deletion effect, deleters against their controls", lambda: rows[cols], max_rows=30)
    bar.update(1)


#: How the report picks the deleters it ablates and shows examples of (said in its captions).
TOP_RULE = ("the neurons with verdict deleting that remove the most on the median firing token "
            "(largest removed_median first)")


def _top_deleters(ctx: Any, k: int) -> list[str]:
    """The ``k`` neurons whose verdict on data is deleting, largest median removal first
    (``TOP_RULE``); none when no neuron erases."""
    cos = ctx.shared.get("cosines")
    if cos is None or "verdict" not in cos.columns:
        return []
    f = cos[cos["verdict"] == "deleting"].sort_values(["removed_median", "firing_rate"], ascending=False,
                                                       kind="stable")
    return [f"L{int(r.layer)}N{int(r.neuron)}" for r in f.head(k).itertuples()]


def neuron_examples(ctx: Any, section: Section, bar: tqdm) -> None:
    """Max-activating examples of the top deleting neurons (``neuron_stats``)."""
    model, s = ctx.model, ctx.settings
    deleters = _top_deleters(ctx, 3)
    if not deleters:
        section.add(Text("No neuron erases on the data (verdict deleting), so there are no examples to show."))
        return
    layers = sorted({int(re.match(r"L(\d+)N", d).group(1)) for d in deleters})
    stats = _run(section, "Top activating examples", lambda: find("neuron_stats")(
        model, s.data, layers=layers, max_tokens=max(256, s.tokens // 4), top_k=8, batch_size=s.batch_size,
        n_ctx=s.n_ctx, progress=ctx.progress))
    bar.update(1)
    if stats is None:
        return
    examples = _run(section, "Top activating examples", lambda: find("top_examples")(stats, deleters))
    ctx.shared["examples"] = examples
    if examples is None:
        return
    shown = _short_examples(examples)
    for d in deleters:
        section.attempt(f"Top activating examples of {d}",
                        lambda d=d: find("plots.top_examples")(shown, label=d, max_examples=8),
                        caption=f"{d}, one of the top deleters ({TOP_RULE}): its 8 highest activations on the "
                                "corpus, each in its context "
                                "(the boxed token is the example; shading is the activation).")


def _short_examples(df: pd.DataFrame, side: int = 5, chars: int = 6) -> pd.DataFrame:
    """Examples cut to ``side`` tokens each side, each token to ``chars`` characters (``…``),
    so a row of cells fits the report's column."""
    if not {"tokens", "acts", "center"} <= set(df.columns):
        return df
    rows = []
    for r in df.to_dict("records"):
        c = int(r["center"])
        lo, hi = max(0, c - side), c + side + 1
        r["tokens"] = [t if len(t) <= chars else t[: chars - 1] + "\u2026" for t in list(r["tokens"])[lo:hi]]
        r["acts"] = list(r["acts"])[lo:hi]
        r["center"] = c - lo
        rows.append(r)
    out = pd.DataFrame(rows, columns=df.columns)
    out.attrs.update(df.attrs)
    return out


__all__ = ["ALTERNATIVES", "CAUSAL_INTRO", "HEADS_INTRO", "causal", "heads", "neuron_examples", "patching_pair"]
