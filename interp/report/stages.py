"""The report's stages: each fills one ``Section`` with figures and tables.

Every analysis and figure is looked up by name (``resolve.find``) and run through
``section.attempt``, so a part that is missing or fails shows as "section unavailable:
<reason>" and the other parts are still built.
"""

from __future__ import annotations

import html
import platform
from typing import Any

import pandas as pd
import torch

from interp._progress import tqdm
from interp.report.document import Html, Section, Text
from interp.report.resolve import find

DECOMPOSITION_INTRO = (
    "Every component writes into the residual stream by addition. Here the stream is taken "
    "apart on one short piece of code: how much each layer writes, which heads and neurons "
    "push the model's prediction directly (logit attribution through the final norm, its "
    "scale frozen from the forward pass), what the stream would predict after each layer "
    "(logit lens, the final norm's scale recomputed for each partial stream), and how the "
    "stream's norm grows through the layers."
)
PROBES_INTRO = (
    "Linear probes read information out of the stream at each layer. Accuracy is measured on "
    "held-out documents and compared with two baselines: the majority class, and the label "
    "predicted from the current token alone (a lookup table fitted on the training documents). "
    "A probe above the lookup reads more than the current token; one at it may only be mapping "
    "the current token to the label it usually has, which is what a memorising probe does. The "
    "Hewitt & Liang (2019) control task (a fixed random label per current token) is in the table "
    "for reference, but it cannot tell the two apart here: wherever the current token is decodable "
    "the control is as easy as the task, so its selectivity (accuracy - control) is near or below "
    "zero whatever the probe reads. The previous-token probe's top directions define a subspace; "
    "the components that write into it before the point it was read, and those that read from it, "
    "form the stream's shared-memory map, and removing the subspace measures what the model loses."
)
MEMORY_INTRO = (
    "The stream has limited bandwidth, and some components manage it: they erase what others "
    "wrote, hold attention on a sink, or rescale every prediction. Every claim here is measured on "
    "real tokens: a neuron is deleting when, on the median token where it fires, its write removes "
    "30-150% of the stream's component along its input vector; a head, when its write removes that "
    "share of what it reads of the stream (sink positions excluded). Weights-only "
    "scores (the in/out cosine, the OV eigenvalues, the null-space share) are screens, shown beside "
    "the verdicts with their precision. Where an attention sink dominates, it comes first."
)
PROBE_LABELS = ("current_token", "previous_token", "line_start_distance")
#: The most stream sites the report probes (see ``probe_sites``).
MAX_PROBE_SITES = 16
#: Directions kept from a probe to define its subspace.
SUBSPACE_K = 8


def _lens_table(df: pd.DataFrame) -> pd.DataFrame:
    """The logit lens without its list columns, for an HTML table."""
    return df.drop(columns=[c for c in ("top_tokens", "top_probs") if c in df.columns])


def _layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean write norm and share of the stream per component, over positions."""
    g = df.groupby("component", observed=True, sort=False)[["norm", "frac"]].mean().reset_index()
    return g.rename(columns={"norm": "mean_norm", "frac": "mean_frac"})


def _capped_note(dla: Any) -> str:
    """What a soft-capped model's attributions are contributions to ('' for an uncapped model)."""
    cap = dla.attrs.get("logit_softcap")
    return "" if cap is None else (
        f" The model soft-caps its logits (cap * tanh(z / cap), cap {cap:g}): the attributions are "
        "contributions to the pre-cap logit z, which add up; the capped logit moves less than z where "
        "|z| nears the cap.")


def _top_heads(df: pd.DataFrame, k: int) -> pd.DataFrame:
    heads = df[df["kind"] == "head"] if "kind" in df.columns else df
    g = heads.groupby("component", observed=True)["attribution"].agg(["mean", "sum"]).reset_index()
    g = g.rename(columns={"mean": "mean_attribution", "sum": "total_attribution"})
    return g.reindex(g["mean_attribution"].abs().sort_values(ascending=False).index).head(k)


def decomposition(ctx: Any, section: Section, bar: tqdm) -> None:
    """Write norms, head logit attribution, top neurons, logit lens and stream norms."""
    model, s = ctx.model, ctx.settings
    writes = model.run_with_writes(s.example, chunk=True)
    ctx.shared["example_writes"] = writes
    bar.update(1)
    section.add(Html(f"Example ({writes.shape[1]} tokens)", f"<pre><code>{html.escape(s.example)}</code></pre>"))

    by_layer = _run(section, "Write norms per layer", lambda: find("decompose")(writes, by="layer", model=model))
    if by_layer is not None:
        section.attempt("Write norms per layer", lambda: find("plots.write_norms")(by_layer),
                        caption="L2 norm of each layer's attention write and MLP write (and of the embedding), "
                                "averaged over the example's positions. The bars stand side by side: norms of "
                                "writes do not add, since writes in different directions partly cancel.")
        section.attempt("Mean write norm per component", lambda: _layer_summary(by_layer))
    bar.update(1)

    dla = _run(section, "Head logit attribution",
               lambda: find("logit_attribution")(writes, None, by="head", model=model))
    if dla is not None:
        section.attempt("Head logit attribution", lambda: find("plots.head_attribution")(dla),
                        caption="Direct contribution of each head to the logit of the actual next token, "
                                "through the final norm (its scale frozen from the forward pass), "
                                "averaged over the example's positions." + _capped_note(dla))
        section.attempt("Top heads by direct logit attribution", lambda: _top_heads(dla, s.top_k))
    bar.update(1)

    neurons = _run(section, "Top neurons",
                   lambda: find("logit_attribution")(writes, None, by="neuron", model=model))
    if neurons is not None:
        section.attempt("Top neurons", lambda: find("plots.top_neurons")(neurons, k=s.top_k),
                        caption="Neurons with the largest mean direct logit attribution to the actual "
                                "next token over the example's positions." + _capped_note(neurons))
    bar.update(1)

    lens = _run(section, "Logit lens", lambda: find("logit_lens")(writes, k=5, model=model))
    ctx.shared["lens"] = lens
    if lens is not None:
        section.attempt("Logit lens", lambda: find("plots.logit_lens")(lens),
                        caption="One row per position of the example (its token on the left), one column per "
                                "stream: the top token (cell text; spaces drawn as ·, newlines as ↵) and the "
                                "probability of the actual next token (colour) if the stream stopped before "
                                "that layer; the final norm's scale is recomputed for every partial stream. "
                                "Deep models show evenly spaced layers; hover a cell for its numbers.")
        section.attempt("Logit lens per layer: KL to the final prediction, probability of the next token",
                        lambda: lens.groupby(["layer", "where"], sort=False)[["kl_to_final", "next_prob"]]
                        .mean().reset_index())
    bar.update(1)

    norms = _run(section, "Stream norms", lambda: _stream_norms(ctx))
    if norms is not None:
        section.attempt("Stream norms", lambda: find("plots.stream_norms")(norms),
                        caption="Norm of the accumulated stream entering each layer, on one window of the "
                                "corpus: growth through the layers, and the first-token outlier.")
    bar.update(1)


def _stream_norms(ctx: Any) -> pd.DataFrame:
    """Stream norms on the first window of the corpus (one row of the first batch)."""
    model, s = ctx.model, ctx.settings
    n_ctx = min(s.n_ctx or model.cfg.n_ctx, model.cfg.n_ctx)
    writes = next(iter(model.stream_writes(s.data, batch_size=1, n_ctx=n_ctx, max_tokens=n_ctx, progress=False)))
    return find("stream_norms")(writes, model=model)


def _run(section: Section, title: str, fn: Any) -> Any:
    """Compute a table without adding it; on error add the note and return None."""
    try:
        return fn()
    except Exception as e:
        section.unavailable(title, e)
        return None


def probes(ctx: Any, section: Section, bar: tqdm) -> None:
    """Probe accuracy per layer for three labels, the previous-token subspace's writers and
    readers, and the effect of removing it."""
    model, s = ctx.model, ctx.settings
    kw = dict(max_tokens=s.tokens, batch_size=s.batch_size, n_ctx=s.n_ctx, seed=s.seed, progress=ctx.progress,
              layers=probe_sites(model.cfg.n_layers))
    # one pass over the data for all three labels
    results = _run(section, "Probes", lambda: find("probe_labels")(model, s.data, labels=PROBE_LABELS, **kw)) or {}
    bar.update(len(PROBE_LABELS))
    if kw["layers"] is not None:
        section.add(Text(f"With {model.cfg.n_layers} layers, the probes read {len(kw['layers'])} evenly spaced streams "
                         f"(entering layers {', '.join(map(str, kw['layers'][:-1]))}, and the final stream); "
                         "interp.probe_layers reads every layer."))
    ctx.shared["probes"] = results
    if results:
        table = pd.concat([df.assign(label=k) for k, df in results.items()], ignore_index=True)
        section.attempt("Probe accuracy per layer", lambda: find("plots.probe_accuracy")(table),
                        caption=_probe_caption(table))
        cols = [c for c in ("label", "layer", "where", "accuracy", "lookup_accuracy", "baseline", "train_accuracy",
                            "control_accuracy", "selectivity", "r2", "control_r2", "n_classes", "n_train",
                            "n_test") if c in table.columns]
        section.attempt("Probe accuracy per layer, with its baselines", lambda: table[cols], max_rows=60,
                        caption="lookup_accuracy: from the current token alone. selectivity = accuracy - "
                                "control_accuracy (uninformative here: see the section's introduction).")

    prev = results.get("previous_token")
    if prev is None:
        section.unavailable("Previous-token subspace", "the previous-token probe is unavailable (see above)")
        return
    picked = _run(section, "Previous-token subspace", lambda: _previous_token_subspace(prev))
    if picked is None:
        return
    subspace, site = picked
    ctx.shared["previous_token_subspace"] = subspace
    layer = int(prev["layer"].iloc[site])
    where = prev["site"].iloc[site] if "site" in prev.columns else f"layer {layer}"
    section.add(Text(
        f"The previous-token subspace: the top {subspace.k} right-singular directions of the previous-token "
        f"probe's weights at {where}, the site where it is most accurate after the embedding "
        f"(k = {subspace.k} of d_model = {model.cfg.d_model} dimensions)."
    ))

    def overlaps() -> Any:
        subspaces = {"previous_token": subspace}
        for label, df in results.items():
            if label != "previous_token":
                subspaces[label] = _subspace(df, int((df["layer"] == layer).to_numpy().argmax()), label)
        return find("plots.subspace_angles")(find("overlap_matrix")(subspaces))

    if len(results) > 1:
        section.attempt("Overlap of the probe subspaces", overlaps,
                        caption=f"Smallest principal angle between the probes' subspaces at layer {layer} "
                                "(90 degrees: orthogonal; 0: sharing a direction).")
    bar.update(1)

    small = max(256, s.tokens // 4)
    stream = dict(batch_size=s.batch_size, n_ctx=s.n_ctx, max_tokens=small, progress=False)
    w = _run(section, "Writers of the previous-token subspace",
             lambda: find("writers")(subspace, model.stream_writes(s.data, **stream)))
    ctx.shared["writers"] = w
    if w is not None:
        at = w.attrs.get("read_point", where)
        section.attempt("Writers of the previous-token subspace",
                        lambda: find("plots.subspace_writers")(w, value="signed_share"),
                        caption=f"Each head's signed share of what the subspace holds at {at}, where the probe "
                                "read it: only components that write before that point count.")
        section.attempt("Top writers of the previous-token subspace", lambda: w.head(s.top_k),
                        caption=f"Strongest first (norm of the write inside the subspace); signed_share sums to 1 "
                                f"over the non-neuron components at {at}.")
    bar.update(1)
    section.attempt("Readers of the previous-token subspace", lambda: find("readers")(subspace, model).head(s.top_k),
                    caption="How strongly each head's W_Q, W_K, W_V and each MLP's W_in read from the "
                            "subspace; ratio > 1 reads it more than a random subspace of the same size.")
    bar.update(1)
    ctx.shared["ablation"] = section.attempt(
        "Ablating the previous-token subspace",
        lambda: find("ablation_effect")(model, s.data, subspace, at=layer, mode="mean", label="previous_token",
                                        layers=_downstream(prev, layer), max_tokens=s.tokens,
                                        batch_size=s.batch_size, n_ctx=s.n_ctx, seed=s.seed, progress=ctx.progress),
        caption=f"Next-token loss and downstream previous-token probe accuracy when the subspace is "
                f"replaced by its mean at layer {layer}, against a random subspace of the same size, "
                "at the probed streams from that layer on.",
    )
    bar.update(1)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _probe_caption(table: pd.DataFrame) -> str:
    """The probe figure's caption; where the control task beats the probe, which labels, and
    what that means (the control is a function of the current token, not a ceiling)."""
    text = ("One panel per label: held-out accuracy of a linear probe at each layer's stream (solid blue), "
            "the label predicted from the current token alone (dotted orange), the Hewitt & Liang control "
            "task (dashed grey: a fixed random label per current token) and the majority-class baseline "
            "(grey band, from 0 up to the majority class's share).")
    above = table[table["control_accuracy"] > table["accuracy"]]
    if above.empty:
        return text
    names = list(dict.fromkeys(above["label"].astype(str).str.replace("_", " ")))
    return text + (
        f" The control lies above the probe for the {_and(names)}: the control's labels are a function of the "
        "current token, so it is as easy as the current token is to read (near 1 at the embedding, which is "
        "the current token), while the probed label is harder to read than that. Selectivity is below zero "
        "there; the control is not a ceiling, and the probe's own accuracy against the lookup is the number "
        "to read."
    )


def _downstream(probes: pd.DataFrame, layer: int) -> list[int]:
    """The probed streams at or after ``layer``: where the ablation's probes read."""
    return sorted(int(v) for v in probes["layer"].unique() if v >= layer)


def probe_sites(n_layers: int) -> list[int] | None:
    """The streams the report probes: every layer's (None) up to ``MAX_PROBE_SITES`` sites,
    else that many evenly spaced from the embedding (0) to the final stream (``n_layers``).
    Fitting costs grow with the sites, and neighbouring layers of a deep model read alike."""
    if n_layers + 1 <= MAX_PROBE_SITES:
        return None
    return sorted({round(i * n_layers / (MAX_PROBE_SITES - 1)) for i in range(MAX_PROBE_SITES)})


def _subspace(df: pd.DataFrame, row: int, name: str) -> Any:
    if "probe" not in df.attrs:
        raise ValueError(f"probe_layers(label={name!r}) did not return its fitted probe in attrs['probe']")
    return find("Subspace").from_probe(df, site=row, k=SUBSPACE_K, name=name)


def _previous_token_subspace(df: pd.DataFrame) -> tuple[Any, int]:
    """The subspace of the previous-token probe at its most accurate site past the embedding."""
    later = df[df["layer"] > 0] if (df["layer"] > 0).any() else df
    row = int(later["accuracy"].idxmax())
    return _subspace(df, row, "previous_token"), row


def memory(ctx: Any, section: Section, bar: tqdm) -> None:
    """Attention sinks, neuron and head verdicts on data (screens beside them), entropy and
    prediction/suppression neurons, deletion evidence. One record of the data serves them all."""
    model, s = ctx.model, ctx.settings
    budget = max(256, s.tokens // 4)
    recs = _run(section, "Memory management data", lambda: list(model.stream_writes(
        s.data, max_tokens=budget, n_ctx=s.n_ctx, batch_size=s.batch_size, progress=ctx.progress)))
    data = recs if recs else s.data
    n_tok = sum(int(w.mask.sum()) for w in recs) if recs else 0
    if n_tok:
        section.add(Text(f"Every verdict below is measured on the same {n_tok:,} real tokens of {s.data!r} "
                         f"(a quarter of the report's {s.tokens:,})."))
    sinks = _run(section, "Attention sinks", lambda: find("attention_sinks")(model, data))
    ctx.shared["sinks"] = sinks
    dominate = _sinks_dominate(sinks)
    if dominate:
        _sinks(section, sinks)
    bar.update(1)

    cos = _run(section, "Neuron verdicts", lambda: find("neuron_verdicts")(model, data))
    ctx.shared["cosines"] = cos
    if cos is not None:
        section.attempt("Screen against verdict", lambda: find("plots.neuron_verdicts")(cos),
                        caption="Each neuron's in/out cosine (the weights-only screen) against the median share "
                                "of the stream's component along its input vector that its write removes on the "
                                "tokens where it fires. The verdict is the measurement; the cosine only predicts "
                                "it in the extreme tail (table below).")
        section.attempt("Verdicts per layer against the null", lambda: _verdict_counts(cos),
                        caption="Neurons per verdict and layer; null_deleting: the same measurement with each "
                                "neuron's output vector swapped for another's of its layer (the trained weights, "
                                "pairing broken): the false positives to expect.")
        section.attempt("The screen's precision", lambda: _precision(cos),
                        caption="Of the N neurons with the most negative in/out cosine, how many erase (median "
                                "removal at least 30%) on the data.")
        cols = [c for c in ("label", "cosine", "verdict", "removed_median", "removed_q10", "removed_q90",
                            "firing_rate") if c in cos.columns]
        flagged = cos[cos["flagged"]].sort_values("removed_median", ascending=False, kind="stable")
        section.attempt("Deleting neurons, most removing first", lambda: flagged[cols].head(s.top_k),
                        caption="Verdict deleting: the median firing token loses 30-150% of the component; "
                                "q10/q90: the 10th and 90th percentiles over those tokens.")
        section.attempt("In/out cosine of every neuron", lambda: find("plots.deleting_neurons")(cos),
                        caption="The screen alone: each neuron's in/out cosine per layer (grey: the null band of "
                                "random vector pairs); orange: neurons whose verdict on data is deleting.")
    bar.update(1)

    heads = _run(section, "Deleting heads", lambda: find("find_deleting_heads")(model, data))
    ctx.shared["deleting_heads"] = heads
    if heads is not None:
        section.attempt("Deleting heads", lambda: find("plots.deleting_heads")(heads),
                        caption="Median share of what each head reads of the stream (at its query) that its write removes, "
                                "over query tokens that are not sinks; ringed: verdict deleting. Hover for its "
                                "attention to its own position and to sinks.")
        cols = ["label", "verdict", "removed_median", "self_attention", "sink_attention", "removed_self", "reason"]
        section.attempt("Deleting heads, most deleting first", lambda: heads[[c for c in cols if c in heads.columns]]
                        .head(s.top_k), caption="Sorted by verdict, then by measured removal. self/sink_attention: "
                        "mean attention to the own position / to sink positions; removed_self: the part of the "
                        "removal that comes from reading its own position.")
    if sinks is not None and not dominate:
        _sinks(section, sinks)
    bar.update(1)

    ent = _run(section, "Entropy neurons", lambda: find("entropy_neurons")(model, data))
    ctx.shared["entropy"] = ent
    if ent is not None:
        section.attempt("Entropy neurons", lambda: find("plots.entropy_neurons")(ent),
                        caption="Left: output norm and the share rho of each last-layer neuron's output vector in "
                                "the unembedding's bottom singular directions (dotted: a random direction's). Right: "
                                "for the largest null-space writers and random controls, the mean absolute change "
                                "of the loss when mean-ablated, through the final norm (total) and with its scale "
                                "frozen (direct).")
        cols = ["label", "verdict", "norm", "rho", "rho_z", "total_effect", "direct_effect", "norm_mediated"]
        section.attempt("Entropy neuron candidates", lambda: ent[ent["role"] == "candidate"][cols].head(s.top_k),
                        caption="The largest writers into the null space, measured; verdict entropy needs rho_z >= 5 "
                                "and at least half of the effect on the loss through the final norm.")
    pred = _run(section, "Prediction and suppression neurons", lambda: find("prediction_neurons")(
        model, layers=list(range(max(0, model.cfg.n_layers - 4), model.cfg.n_layers))))
    ctx.shared["prediction"] = pred
    if pred is not None:
        section.attempt("Prediction and suppression neurons", lambda: find("plots.prediction_neurons")(pred),
                        caption="Skew and kurtosis over the vocabulary of each neuron's direct logit effect "
                                "W_U^T w_out (the last four layers); grey: random directions through the same W_U.")
        cols = ["label", "kind", "vocab_skew", "vocab_kurtosis", "top_token", "top_value"]
        found = pred[pred["kind"] != "none"]
        if len(found):
            section.attempt("Strongest prediction and suppression neurons", lambda: found[cols].head(s.top_k))
        else:
            section.add(Text("No neuron of these layers singles out tokens more than random directions read "
                             f"through the same W_U do (kurtosis up to {pred.attrs.get('null_kurtosis_max', 0):.1f}, "
                             f"|skew| up to {pred.attrs.get('null_skew_max', 0):.2f})."))
    bar.update(1)

    chosen_n = flagged.head(s.top_k) if cos is not None else []
    chosen_h = heads[heads["flagged"]] if heads is not None else []
    if len(chosen_n) == 0 and len(chosen_h) == 0:
        section.add(Text("No neuron or head erases on the data, so there is no deletion evidence to gather."))
        bar.update(1)
        return
    evidence = _run(section, "Deletion evidence on data", lambda: find("deletion_evidence")(
        model, data, neurons=chosen_n, heads=chosen_h, subspace=ctx.shared.get("previous_token_subspace"),
        progress=False))
    ctx.shared["evidence"] = evidence
    if evidence is not None:
        section.attempt("Deletion graph", lambda: find("plots.deletion_graph")(evidence),
                        caption="The strongest deleting neurons and heads (orange diamonds; the subtitle says how "
                                "many are drawn, the tables below list them all) linked to the earlier "
                                "components whose writes they erase (circles, coloured by kind); columns are "
                                "stages of the forward pass, rows within a column only separate the nodes. "
                                "Edge width is the writer's share of the erased direction; hover an edge's "
                                "middle for the number.")
        section.attempt("What each deleter erases", lambda: find("deletion_summary")(evidence),
                        caption="Firing rate, the pooled fraction of the component removed, and the writers it "
                                "erases.")
        section.attempt("Deletion evidence", lambda: evidence, max_rows=40)
    bar.update(1)


def _sinks_dominate(sinks: Any) -> bool:
    """A sink dominates when some token's stream is massive and draws most of a layer's attention."""
    if sinks is None or not len(sinks):
        return False
    m = sinks[sinks["massive"]]
    return bool(len(m)) and bool((m["attention"].fillna(0) >= 0.5).any())


def _sinks(section: Section, sinks: pd.DataFrame) -> None:
    section.attempt("Attention sinks", lambda: find("plots.attention_sinks")(sinks),
                    caption="Left: the stream norm of position 0 and of every massive token over the layer's "
                            "median token norm (dashed: the massive cut). Right: the attention the layer's heads "
                            "put on it (line: mean over heads and non-sink queries; triangle: the top head).")
    cols = ["layer", "sink", "n", "norm", "norm_ratio", "dim", "dim_ratio", "attention", "top_head",
            "top_head_attention"]
    section.attempt("Attention sinks per layer", lambda: sinks[sinks["massive"]][cols], max_rows=40)


def _verdict_counts(cos: pd.DataFrame) -> pd.DataFrame:
    """Per layer: neurons per verdict, and the null pairs judged deleting."""
    from interp.memory.verdict import VERDICTS

    g = pd.crosstab(cos["layer"], cos["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    g.insert(0, "neurons", g.sum(1))
    nulls = cos.attrs.get("null_verdicts_by_layer")
    if nulls:
        g["null_deleting"] = [nulls.get(int(ly), 0) for ly in g.index]
    return g.reset_index()


def _precision(cos: pd.DataFrame) -> pd.DataFrame:
    rows = cos.attrs.get("screen_precision", [])
    return pd.DataFrame([dict(most_negative=r["n"], erase=r["erasing"], share=r["erasing"] / max(r["n"], 1),
                              note="the screen's own flags" if r.get("screen_flags") else "")
                         for r in rows])


def settings_table(ctx: Any, section: Section, timings: dict[str, float], total: float) -> None:
    """The settings used, the environment, and the time each stage took."""
    from interp.report.build import settings_frame

    section.attempt("Settings", lambda: settings_frame(ctx.settings).assign(
        value=lambda d: d["value"].str.slice(0, 120)))
    import interp

    env = {
        "interp": interp.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "pandas": pd.__version__, "plotly": _version("plotly"), "transformer_lens": _version("transformer_lens"),
        "device": str(ctx.model.device), "dtype": str(ctx.model.cfg.dtype),
        "processing": ctx.model.cfg.processing,
    }
    section.attempt("Environment", lambda: pd.DataFrame(list(env.items()), columns=["package", "version"]))
    times = pd.DataFrame([*timings.items(), ("total", total)], columns=["stage", "seconds"])
    section.attempt("Time per stage", lambda: times, caption="Wall time of each stage of this report.")


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg.replace("_", "-"))
    except PackageNotFoundError:
        return "not installed"
