"""``probe_layers``: where in the stream a label can be read out linearly, with held-out
accuracy, a majority-class baseline and a control task."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_device, check_fraction, check_int, check_stream
from interp._threads import with_analysis_threads
from interp.probes.labels import get_labeler
from interp.probes.linear import LinearProbe
from interp.probes.sites import Collected, collect, resolve_sites

log = logging.getLogger(__name__)

COLUMNS = [
    "label", "layer", "where", "site", "accuracy", "train_accuracy", "baseline", "control_accuracy",
    "selectivity", "lookup_accuracy", "r2", "control_r2", "n_classes", "n_train", "n_test",
]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def split_documents(docs: Tensor, n_docs: int, *, test_size: float, seed: int) -> Tensor:
    """Boolean ``[n]``: True for positions in held-out documents. Documents are visited in a
    seeded random order and each is held out when that brings the held-out positions closer
    to ``test_size`` of all positions; at least one document stays on each side."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size!r} must be between 0 and 1 (exclusive)")
    if n_docs < 2:
        raise ValueError(
            f"data holds {n_docs} document; a held-out split by document needs at least 2. Pass a list "
            "of several texts, or a LongTensor with one document per row"
        )
    sizes = torch.bincount(docs, minlength=n_docs).tolist()
    target = test_size * sum(sizes)
    # documents that gave no position (all padding or unlabelled) can sit on neither side
    order = [d for d in torch.randperm(n_docs, generator=torch.Generator().manual_seed(seed)).tolist() if sizes[d]]
    if len(order) < 2:
        raise ValueError(
            f"the positions come from {len(order)} document; a held-out split by document needs at least 2. "
            "Pass more tokens (max_tokens), more or shorter documents, or a LongTensor with one document per row"
        )
    held, count = [], 0
    for d in order:
        if abs(count + sizes[d] - target) < abs(count - target):
            held.append(d)
            count += sizes[d]
    if not held:
        held = [min(order, key=lambda d: sizes[d])]
    if len(held) == len(order):
        held.pop()
    is_test = torch.zeros(n_docs, dtype=torch.bool)
    is_test[held] = True
    return is_test[docs]


def control_labels(y: Tensor, types: Tensor, *, seed: int) -> Tensor:
    """Hewitt & Liang (2019) control task: every token type gets one fixed label, drawn from
    the empirical distribution of ``y``; each position gets its type's label."""
    g = torch.Generator().manual_seed(seed)
    uniq, inverse = torch.unique(types, return_inverse=True)
    draw = torch.randint(len(y), (len(uniq),), generator=g)
    return y[draw][inverse]


def lookup_accuracy(y: Tensor, types: Tensor, test: Tensor) -> float:
    """Held-out accuracy of predicting ``y`` from the current token alone: a table from each
    training token type to its most frequent label (unseen types: the majority label).

    A probe above it reads more than the current token; one at it may only be mapping the
    current token's identity to the label it usually has (what a memorising probe does).
    """
    train = pd.DataFrame({"t": types[~test].cpu().numpy(), "y": y[~test].cpu().numpy()})
    table = train.value_counts().reset_index().drop_duplicates("t").set_index("t")["y"]
    majority = train["y"].mode().iloc[0]
    pred = pd.Series(types[test].cpu().numpy()).map(table).fillna(majority).to_numpy()
    return float((pred == y[test].cpu().numpy()).mean())


def _fit_and_score(
    probe: LinearProbe, X_train: Tensor, X_test: Tensor, y: Tensor, test: Tensor
) -> tuple[Tensor, Tensor, LinearProbe]:
    probe.fit(X_train, y[~test])
    return probe.score(X_test, y[test]), probe.score(X_train, y[~test]), probe


@with_analysis_threads
def probe_layers(
    model: Any,
    data: Any = "stdlib:val",
    label: Any = "previous_token",
    *,
    where: str = "resid_pre",
    layers: Any = None,
    max_tokens: int | None = 50_000,
    top_k: int = 50,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
    solver: str = "lbfgs",
    test_size: float = 0.2,
    batch_size: int = 8,
    n_ctx: int | None = None,
    exclude_first: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train a linear probe for ``label`` at every site and report held-out accuracy.

    Args:
        model: an ``interp.Model``.
        data: a list of texts (each a document), ``"stdlib:val"`` (default) or another corpus
            name, a file or directory, or a LongTensor ``[batch, pos]`` (each row a document).
        label: a built-in labeler name (see ``interp.labels``), a ``Labeler``, or a callable
            ``fn(tokens, str_tokens) -> labels [batch, pos]``.
        where: ``"resid_pre"`` (default), ``"resid_mid"`` or ``"resid_post"``.
        layers: layers to probe; default all, plus the final stream (``layer = n_layers``)
            for ``"resid_pre"``.
        max_tokens: labelled positions to collect (memory: ``max_tokens * sites * d_model``
            float32 numbers).
        top_k: classes kept; the rest are pooled into one "other" class that counts as a
            correct prediction when predicted for an unkept label.
        weight_decay / max_iter / solver: passed to ``LinearProbe``.
        test_size: fraction of positions held out, in whole documents (shuffled, seeded):
            positions of one document never sit on both sides.
        exclude_first: leave out position 0 of every row: it holds BOS for text inputs and
            is the attention sink in any case, so its stream is an outlier.
        seed: the document split and the control labels.
        device: where the probes train (default: the model's device). Features are kept on
            the CPU while streaming.
    Returns:
        One row per site, in layer order:
            label:str, layer:int, where:str, site:str ("L1_resid_pre"),
            accuracy:float (held-out), train_accuracy:float, baseline:float (held-out
            frequency of the training set's majority class), control_accuracy:float
            (held-out accuracy of the same probe on control labels: a fixed random label per
            current-token type with the label's distribution), selectivity:float
            (accuracy - control_accuracy; when the current token is decodable at a site the
            control is about as easy as the task, so selectivity is then near or below 0
            whatever the probe reads), lookup_accuracy:float (held-out accuracy of predicting
            the label from the current token alone, a table fitted on the training documents:
            a probe above it reads more than the current token), r2 / control_r2:float (ordinal labels: held-out R²
            of a ridge regression on the label's value and on control values; NaN for
            categorical labels), n_classes:int, n_train:int, n_test:int.
        ``df.attrs["probe"]`` holds the fitted classification ``LinearProbe`` as plain data
        (a string, so the frame saves with ``to_pickle`` / ``to_parquet``): read it with
        ``LinearProbe.from_frame(df)`` (one site per row, ``probe.sites_`` in row order);
        build a ``Subspace`` with ``Subspace.from_probe(df, site=i)``.
    Raises:
        ValueError: unknown ``where`` or ``label``, layers out of range, fewer than two documents.
    Examples:
        >>> interp.probe_layers(model, texts, label="previous_token")[["layer", "accuracy"]]
    """
    labeler = get_labeler(label)
    frames = probe_labels(
        model, data, [labeler], where=where, layers=layers, max_tokens=max_tokens, top_k=top_k,
        weight_decay=weight_decay, max_iter=max_iter, solver=solver, test_size=test_size, batch_size=batch_size,
        n_ctx=n_ctx, exclude_first=exclude_first, seed=seed, device=device, progress=progress,
    )
    return frames[labeler.name]


@with_analysis_threads
def probe_labels(
    model: Any,
    data: Any = "stdlib:val",
    labels: Any = ("current_token", "previous_token"),
    *,
    where: str = "resid_pre",
    layers: Any = None,
    max_tokens: int | None = 50_000,
    top_k: int = 50,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
    solver: str = "lbfgs",
    test_size: float = 0.2,
    batch_size: int = 8,
    n_ctx: int | None = None,
    exclude_first: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """``probe_layers`` for several labels from one pass over ``data``: the stream is
    collected once (up to ``max_tokens`` positions that any label labels) and each label's
    probes train on the positions it labels.

    Args: as ``probe_layers``; ``labels`` is a sequence of what ``label`` takes.
    Returns:
        ``{label name: frame}``, each frame with ``probe_layers``' columns and
        ``attrs["probe"]``.
    Examples:
        >>> frames = interp.probe_labels(model, labels=["current_token", "previous_token"])
    """
    if isinstance(labels, str) or not hasattr(labels, "__iter__"):
        raise TypeError(f"labels={labels!r} must be a sequence of labels, e.g. ['current_token', 'previous_token']")
    labelers = [get_labeler(lb) for lb in labels]
    names = [lb.name for lb in labelers]
    if not labelers or len(set(names)) != len(names):
        raise ValueError(f"labels={list(names)!r} must name at least one label, each once")
    sites = resolve_sites(model, layers, where)
    device, seed = check_device("device", device), check_int("seed", seed)
    check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress,
                 exclude_first=exclude_first)
    check_fraction("test_size", test_size)
    LinearProbe(top_k=top_k, weight_decay=weight_decay, max_iter=max_iter, solver=solver)._check_params()
    many = len(labelers) > 1  # one label keeps the record as it is (no per-label copy of the features)
    col = collect(
        model, data, sites, labeler=labelers if many else labelers[0], max_tokens=max_tokens,
        batch_size=batch_size, n_ctx=n_ctx, exclude_first=exclude_first, progress=progress,
        desc="probe " + ", ".join(names),
    )
    out = {}
    for j, labeler in enumerate(labelers):
        fresh = LinearProbe(top_k=top_k, weight_decay=weight_decay, max_iter=max_iter, solver=solver)
        out[labeler.name] = _probe_frame(col.for_label(j) if many else col, labeler, fresh, test_size=test_size,
                                         seed=seed, device=device or model.device)
    return out


def _probe_frame(
    col: Collected, labeler: Any, probe: LinearProbe, *, test_size: float, seed: int, device: Any = "cpu"
) -> pd.DataFrame:
    test = split_documents(col.docs, len(col.doc_names), test_size=test_size, seed=seed)
    if col.y[~test].unique().numel() < 2:
        raise ValueError(
            f"label={labeler.name!r} takes a single value on the training documents; "
            "a probe needs at least two classes (pass more data or another label)"
        )
    y = col.y
    X_train, X_test = col.split(test)
    X_train, X_test = X_train.to(device), X_test.to(device)
    acc, train_acc, probe = _fit_and_score(probe, X_train, X_test, y, test)
    probe.sites_ = list(col.sites)
    majority = probe.encode(y[~test]).mode().values
    baseline = float((probe.encode(y[test]) == majority).float().mean())
    enc = probe.encode(y)  # labels outside the kept classes pooled, as the probe scores them
    lookup = lookup_accuracy(enc, col.types, test)
    y_ctrl = control_labels(y, col.types, seed=seed + 1)
    ctrl = LinearProbe(**{k: getattr(probe, k) for k in ("top_k", "weight_decay", "max_iter", "solver", "lr", "scaling")})
    ctrl_acc, _, _ = _fit_and_score(ctrl, X_train, X_test, y_ctrl, test)
    r2 = ctrl_r2 = torch.full((len(col.sites),), float("nan"))
    if labeler.kind == "ordinal":
        reg = LinearProbe(task="regress", weight_decay=probe.weight_decay)
        r2, _, reg = _fit_and_score(reg, X_train, X_test, y, test)
        ctrl_reg = LinearProbe(task="regress", weight_decay=probe.weight_decay)
        ctrl_r2, _, _ = _fit_and_score(ctrl_reg, X_train, X_test, y_ctrl, test)
        probe.regressor_ = reg
    n_test = int(test.sum())
    df = pd.DataFrame({
        "label": labeler.name,
        "layer": [s.layer for s in col.sites],
        "where": [s.where for s in col.sites],
        "site": [s.label for s in col.sites],
        "accuracy": _np(acc),
        "train_accuracy": _np(train_acc),
        "baseline": baseline,
        "control_accuracy": _np(ctrl_acc),
        "selectivity": _np(acc) - _np(ctrl_acc),
        "lookup_accuracy": lookup,
        "r2": _np(r2),
        "control_r2": _np(ctrl_r2),
        "n_classes": len(probe.classes_),
        "n_train": len(y) - n_test,
        "n_test": n_test,
    }, columns=COLUMNS)
    df.attrs["probe"] = probe.to_attr()  # plain data: the frame saves; LinearProbe.from_frame(df) reads it
    return df
