"""The measuring loop behind ``deletion_effect``: clean and ablated runs, batch by batch,
reduced to sums over the deleter's tokens (nothing larger than one batch's stream is kept,
except probe features at a few sites when a probe is asked for)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from interp.patching._runner import Runner


class _Sums:
    def __init__(self, n_sites: int):
        z = lambda: torch.zeros(n_sites, dtype=torch.float64)  # noqa: E731
        self.num_c, self.num_a, self.sub_c, self.sub_a = z(), z(), z(), z()
        self.den, self.pred, self.n = 0.0, 0.0, 0


def _sites(model: Any, d: Any, layers: list[int] | None) -> list[tuple[int, str]]:
    c = model.cfg
    out = [(ly, "resid_pre") for ly in range(d.layer + 1, c.n_layers + 1) if layers is None or ly in layers]
    if d.kind == "head" and not c.parallel:
        out.insert(0, (d.layer, "resid_mid"))
    return out


def _immediate(model: Any, d: Any) -> tuple[int, str]:
    if d.kind == "head" and not model.cfg.parallel:
        return (d.layer, "resid_mid")
    return (d.layer + 1, "resid_pre")


def _stream(runner: Runner, cap: dict, site: tuple[int, str], rows: slice) -> Tensor:
    ly, where = site
    x = cap[("resid", ly)][rows]
    if where == "resid_mid":
        x = x + cap[("attn", ly)][rows]
    return runner.to_compat(x.double())


def _z_shift(model: Any, runner: Runner, layer: int) -> Tensor:
    """raw z - processed z for every head of ``layer`` (zero through the bridge)."""
    c = model.cfg
    if runner.backend == "raw" and model._fast is not None and model._fast.z_shift is not None:
        return model._fast.z_shift[layer].double()
    return torch.zeros(c.n_heads, c.d_head, dtype=torch.float64)


def measure(model: Any, runner: Runner, plans: list, batches: list, *, mode: str, layers: list[int] | None,
            first: int, probe: Any, subspace: Any, test_size: float, seed: int, progress: Any) -> list[dict]:
    c, w = model.cfg, model.weights
    dev = model.device
    basis = None
    if subspace is not None:
        from interp.probes.memory_map import _basis

        basis = torch.linalg.qr(_basis(subspace, c.d_model, "the model has").double())[0].to(dev)
    labeler = None
    if probe is not None:
        from interp.probes.labels import get_labeler

        labeler = get_labeler(probe)
    lay_of = sorted({d.layer for d, _ in plans})
    lo = min(lay_of)
    clean_sites = [("resid", ly) for ly in range(lo, c.n_layers + 1)]
    for ly in lay_of:
        clean_sites += [("attn", ly), ("act", ly), ("z", ly)]
        if c.post_norm:  # the predicted write is over the frozen post-norm scale (interp.writes)
            clean_sites += [("attn_scale", ly), ("mlp_scale", ly)]

    # ---- means for mode="mean" (in the runner's convention) ----------------------------------
    means: dict[Any, Tensor] = {}
    if mode == "mean":  # interp.stats.Moments: streaming, and all-reduced under torch.distributed
        from interp.stats import Moments

        mom: dict[tuple[str, int], Moments] = {}
        for b in batches:
            _, cap = runner.run(b.tokens, capture=[(k, ly) for ly in lay_of for k in ("act", "z")], last_only=True)
            m = b.mask.clone()
            m[:, 0] = False  # the first position (BOS, the attention sink) is an outlier
            m = m.to(dev)
            for key, t in cap.items():
                x = t[m]
                mom.setdefault(key, Moments(tuple(x.shape[1:]), device=x.device)).update(x)
        for st in mom.values():
            st.all_reduce()
        for _d, group in plans:
            for a in group:
                key = ("act", a.layer) if a.kind == "neuron" else ("z", a.layer)
                means[a] = mom[key].mean[a.index]

    sites_of = {d: _sites(model, d, layers) for d, _ in plans}
    sums_of = {(d, a): _Sums(len(sites_of[d])) for d, group in plans for a in group}
    probe_sites = {}
    if labeler is not None:
        for d, _ in plans:
            s = sites_of[d]
            pick = sorted({round(i * (len(s) - 1) / 3) for i in range(4)}) if len(s) > 4 else range(len(s))
            probe_sites[d] = [s[i] for i in pick]
    feats: dict[Any, list[Tensor]] = {}
    ys, docs, doc_index = [], [], {}
    strings = None
    if labeler is not None and labeler.needs_text:
        from interp.probes.sites import vocab_strings

        strings = vocab_strings(model)
    bar = progress(total=len(batches) * len(plans), desc="deletion_effect") if progress else None
    for b in batches:
        toks = b.tokens
        m = b.mask.clone()
        m[:, 0] = False
        pm = None
        if labeler is not None:
            from interp.probes.labels import IGNORE, check_labels

            st = [[strings[t] for t in row] for row in toks.tolist()] if strings is not None else None
            lab = check_labels(labeler, labeler(toks, st, b.continues), tuple(toks.shape))
            pm = m & (lab != IGNORE)
            ys.append(lab[pm])
            # held-out units: documents when there are several, else windows (rows)
            units = [f"{x}#{i}" for i, x in enumerate(b.doc_ids)] if len(set(b.doc_ids)) < 2 else b.doc_ids
            row_doc = torch.tensor([doc_index.setdefault((len(ys), x) if x.count("#") else x, len(doc_index))
                                    for x in units])
            docs.append(row_doc[:, None].expand_as(pm)[pm])
        _, cap = runner.run(toks, capture=clean_sites, last_only=True)
        nb = toks.shape[0]
        md = m.to(dev)
        for d, group in plans:
            L, k = d.layer, len(group)
            sites = sites_of[d]
            x_pre = cap[("resid", L)]
            x_in = x_pre if (d.kind == "head" or c.parallel) else x_pre + cap[("attn", L)]
            x_in = runner.to_compat(x_in.double())[md]  # [n, d_model]
            shift = _z_shift(model, runner, L) if d.kind == "head" else None
            rows_of = {a: slice(j * nb, (j + 1) * nb) for j, a in enumerate(group)}

            def edit(t: Tensor, group=group, shift=shift, nb=nb) -> Tensor:
                t = t.clone()
                for j, a in enumerate(group):
                    r = slice(j * nb, (j + 1) * nb)
                    if a in means:
                        t[r, :, a.index] = means[a].to(t.dtype)
                    elif a.kind == "head":
                        t[r, :, a.index] = shift[a.index].to(t.dtype)
                    else:
                        t[r, :, a.index] = 0
                return t

            site = ("act", L) if d.kind == "neuron" else ("z", L)
            want = sorted({("resid", ly) for ly, _ in sites} | ({("attn", L)} if d.kind == "head" else set()))
            if runner.backend == "raw":
                _, abl = runner.run(toks, edits={site: [edit]}, capture=want, expand=(L, k), last_only=True)
            else:
                _, abl = runner.run(toks.repeat(k, 1), edits={site: [edit]}, capture=want, last_only=True)
            for a in group:
                S = sums_of[(d, a)]
                if a.kind == "neuron":
                    u = w.mlp_in(L)[:, a.index].double()
                    u = u / u.norm().clamp_min(1e-30)
                    act = cap[("act", L)][..., a.index].double()[md]
                    gate = w.mlp_gate(L)
                    fire = (x_in @ gate[:, a.index].double() > 0) if gate is not None else act > 0
                    D = u.expand(x_in.shape[0], -1)
                    new = means[a].double() if a in means else torch.zeros((), dtype=torch.float64)
                    dwrite_d = (new - act) * float(w.mlp_out(L)[a.index].double() @ u)
                    if c.post_norm:
                        dwrite_d = dwrite_d / cap[("mlp_scale", L)].double()[md][:, 0]
                else:
                    zc = cap[("z", L)][..., a.index, :].double()[md] - shift[a.index].to(dev)
                    W_O = w.W_O[L, a.index].double().to(dev)
                    write = zc @ W_O
                    if c.post_norm:
                        s_attn = cap[("attn_scale", L)].double()[md]  # [n, 1]
                        write = write / s_attn
                    norm = write.norm(dim=-1)
                    fire = norm > 0
                    D = -write / norm.clamp_min(1e-30)[:, None]
                    znew = (means[a].double().to(dev) - shift[a.index].to(dev)) if a in means else torch.zeros_like(zc)
                    dwrite_d = ((znew - zc) @ W_O * D).sum(-1)
                    if c.post_norm:
                        dwrite_d = dwrite_d / s_attn[:, 0]
                p = (x_in * D).sum(-1)
                f = fire.double()
                sg = torch.sign(p) * f
                S.den += float((p.abs() * f).sum())
                S.n += int(fire.sum())
                if sites and sites[0] == _immediate(model, d):
                    S.pred += float((sg * dwrite_d).sum())
                for i, st in enumerate(sites):
                    xc = _stream(runner, cap, st, slice(None))[md]
                    xa = _stream(runner, abl, st, rows_of[a])[md]
                    S.num_c[i] += float((sg * (xc * D).sum(-1)).sum())
                    S.num_a[i] += float((sg * (xa * D).sum(-1)).sum())
                    if basis is not None:
                        S.sub_c[i] += float((f * (xc @ basis).pow(2).sum(-1)).sum())
                        S.sub_a[i] += float((f * (xa @ basis).pow(2).sum(-1)).sum())
                if labeler is not None:
                    pmd = pm.to(dev)
                    for st in probe_sites[d]:
                        if a is d:
                            feats.setdefault((d, "clean", st), []).append(
                                _stream(runner, cap, st, slice(None))[pmd].float().cpu())
                        feats.setdefault((d, a, st), []).append(_stream(runner, abl, st, rows_of[a])[pmd].float().cpu())
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    acc = _probe_scores(plans, probe_sites, feats, ys, docs, len(doc_index), test_size, seed) if labeler else {}
    rows = []
    for d, group in plans:
        imm = _immediate(model, d)
        for j, a in enumerate(group):
            S = sums_of[(d, a)]
            den = S.den if S.den > 0 else float("nan")
            for i, st in enumerate(sites_of[d]):
                row = dict(
                    deleter=d.label, component=a.label, role="deleter" if j == 0 else "control", draw=j,
                    kind=a.kind, layer=a.layer, index=a.index, site=f"L{st[0]}_{st[1]}", site_layer=st[0],
                    where=st[1], n_tokens=S.n, survival_clean=float(S.num_c[i]) / den,
                    survival_ablated=float(S.num_a[i]) / den,
                )
                row["change"] = row["survival_ablated"] - row["survival_clean"]
                row["predicted"] = S.pred / den if st == imm else float("nan")
                if basis is not None:
                    nf = max(S.n, 1)
                    row["subspace_clean"] = float(S.sub_c[i]) / nf
                    row["subspace_ablated"] = float(S.sub_a[i]) / nf
                if labeler is not None:
                    got = acc.get((d, a, st))
                    row["accuracy_clean"] = got[0] if got else float("nan")
                    row["accuracy_ablated"] = got[1] if got else float("nan")
                    row["accuracy_change"] = row["accuracy_ablated"] - row["accuracy_clean"]
                rows.append(row)
    return rows


def _probe_scores(plans, probe_sites, feats, ys, docs, n_docs, test_size, seed) -> dict:
    """Train on the clean stream of the training documents, score held-out clean and ablated."""
    from interp.probes.linear import LinearProbe
    from interp.probes.probing import split_documents

    y, doc = torch.cat(ys), torch.cat(docs)
    test = split_documents(doc, n_docs, test_size=test_size, seed=seed)
    out = {}
    for d, group in plans:
        sites = probe_sites[d]
        if not sites:
            continue
        Xc = torch.stack([torch.cat(feats[(d, "clean", st)]) for st in sites])  # [S, n, d_model]
        probe = LinearProbe(top_k=50, max_iter=100).fit(Xc[:, ~test], y[~test])
        clean_acc = probe.score(Xc[:, test], y[test])
        for a in group:
            Xa = torch.stack([torch.cat(feats[(d, a, st)]) for st in sites])
            abl_acc = probe.score(Xa[:, test], y[test])
            for i, st in enumerate(sites):
                out[(d, a, st)] = (float(clean_acc[i]), float(abl_acc[i]))
    return out
