"""Deleting neurons judged on data: the removal distribution and its verdicts, planted deleters
against decoys (a negative cosine that erases nothing; a deleter that never fires; an
amplifier), the trained-weights null, and the frame's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interp
from interp.memory.neuron_data import derangement
from interp.memory.verdict import BIN, Cuts, add_tokens, removal_histogram, summarise
from interp.testing import random_hf_model, tiny_tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "import os\nimport sys\n\npath = os.path.join(sys.prefix, 'lib')\n",
] * 3
DELETERS = [(1, 20), (1, 200), (0, 10)]
WEAK = (1, 40)  # cosine -1, removes ~1%: the screen ranks it first, the data do not
SILENT = (1, 60)  # cosine -1 and large, but never fires
AMPLIFIER = (1, 30)


# ---- the distribution and the verdict rules ---------------------------------------------
def test_summary_matches_numpy_and_cuts_are_exact():
    g = torch.Generator().manual_seed(0)
    r = torch.cat([torch.rand(999, 1, generator=g) * 0.5 + 0.55,  # deleting: median ~0.8
                   torch.randn(999, 1, generator=g) * 0.01,  # none
                   torch.rand(999, 1, generator=g) * 0.2 - 0.5,  # amplifying
                   torch.full((999, 1), 2.0),  # overshoots: coupled
                   torch.where(torch.arange(999)[:, None] % 2 == 0, 0.9, -0.9).double(),  # two-sided: coupled
                   torch.full((999, 1), 0.3)], 1).double()  # exactly at the cut: deleting
    counted = torch.ones_like(r, dtype=torch.bool)
    counted[::2, 1] = False
    cuts = Cuts()
    h = removal_histogram(r.shape[1], cuts)
    add_tokens(h, r[:500], counted[:500])
    h2 = removal_histogram(r.shape[1], cuts)
    add_tokens(h2, r[500:], counted[500:])
    s = summarise(h.merge(h2), cuts)  # shards merge exactly
    assert list(s.verdict) == ["deleting", "none", "amplifying", "coupled", "coupled", "deleting"]
    for j in range(r.shape[1]):
        x = r[counted[:, j], j].numpy()
        assert s.n[j] == len(x)
        assert abs(s.median[j] - np.clip(np.median(x), -2, 3)) <= BIN, j  # interpolated within one bin
        assert s.erase_share[j] == pytest.approx(float((x >= 0.3).mean()), abs=1e-12)  # exact at a cut
    # nothing counted: NaN and none
    empty = removal_histogram(1, cuts)
    add_tokens(empty, torch.ones(4, 1), torch.zeros(4, 1, dtype=torch.bool))
    e = summarise(empty, cuts)
    assert e.verdict[0] == "none" and np.isnan(e.median[0])


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 17, 512):
        p = derangement(n, 1)
        assert sorted(p.tolist()) == list(range(n)) and not (p == torch.arange(n)).any()


# ---- planted truth ----------------------------------------------------------------------
def _mlp(hf, family, layer):
    if family == "gpt2":
        mlp = hf.transformer.h[layer].mlp
        return mlp.c_fc.weight, mlp.c_proj.weight, mlp.c_fc.bias
    mlp = hf.model.layers[layer].mlp
    return mlp.up_proj.weight.T, mlp.down_proj.weight.T, None


def _unit_median(model, w, ly, n, u):
    """Median over firing tokens of ``-a / (x . u)``: the removal of an output vector ``u``."""
    x = w.resid(ly, "pre" if model.cfg.parallel else "mid")[w.mask].double()
    a = w.acts[ly][..., n][w.mask].double()
    gate = model.weights.mlp_gate(ly)
    fire = (x @ gate[:, n].double() > 0) if gate is not None else a > 0
    return float((-a / (x @ u.double()))[fire].median())


def _planted(family):
    """Random model; each deleter's output vector set to ``-alpha u`` with alpha chosen on the
    unplanted model so that its median firing token loses about 80% of its input component."""
    hf = random_hf_model(family)
    base = interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu")
    rec = base.run_with_writes(TEXTS)
    w_out_u = {}
    for ly, n in [*DELETERS, WEAK, SILENT, AMPLIFIER]:  # the neuron's reading direction in the stream
        u = base.weights.mlp_in(ly)[:, n].detach().clone()  # (compat: the norm's gain folded in)
        w_out_u[(ly, n)] = u / u.norm()
    # removal is linear in the output vector's component k along u: r = -a k / p
    with torch.no_grad():
        for (ly, n), target in [*((d, 0.8) for d in DELETERS), (WEAK, 0.01), (AMPLIFIER, -0.8), (SILENT, 0.8)]:
            w_in, w_out, b_in = _mlp(hf, family, ly)
            u = w_out_u[(ly, n)]
            med = _unit_median(base, rec, ly, n, u)  # the median removal for k = 1
            scale = target / med
            if (ly, n) == WEAK:  # cosine exactly -1, removal about 1% in size
                scale = -abs(scale)
            w_out[n] = scale * u
            if (ly, n) == SILENT:
                w_out[n] = -5.0 * u
                if b_in is not None:
                    b_in[n] = -1e4  # never fires
                else:
                    hf.model.layers[ly].mlp.gate_proj.weight[n] = 0.0
                    hf.model.layers[ly].mlp.gate_proj.weight[n, 0] = 1e-6  # gate ~0: silu(~0) ~ 0, rarely open
    return interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def planted(request):
    return _planted(request.param)


def test_planted_deleters_found_and_decoys_not(planted):
    df = interp.neuron_verdicts(planted, TEXTS)
    by = df.set_index("label")
    labels = [f"L{ly}N{n}" for ly, n in DELETERS]
    found = set(df.loc[df["flagged"], "label"])
    assert set(labels) <= found, by.loc[labels, ["verdict", "removed_median", "n_firing"]]  # recall 1
    for decoy in (f"L{WEAK[0]}N{WEAK[1]}", f"L{SILENT[0]}N{SILENT[1]}", f"L{AMPLIFIER[0]}N{AMPLIFIER[1]}"):
        assert decoy not in found, by.loc[decoy, ["verdict", "removed_median", "n_firing"]]
    assert by.loc[f"L{AMPLIFIER[0]}N{AMPLIFIER[1]}", "verdict"] == "amplifying"
    # the screen ranks the weak decoy among the most negative; the verdict does not follow it
    assert by.loc[f"L{WEAK[0]}N{WEAK[1]}", "cosine"] < -0.9 and df["label"].head(8).eq(f"L{WEAK[0]}N{WEAK[1]}").any()
    # no unplanted neuron erases, and the trained-weights null expects about as few
    assert found == set(labels), sorted(found - set(labels))
    assert df.attrs["expected_false_positives"] <= 2
    assert df.attrs["verdicts"]["deleting"] == len(labels)
    fd = interp.find_deleting_neurons(planted, TEXTS)
    assert set(fd["label"]) == set(labels) and fd["cosine"].is_monotonic_increasing
    assert list(fd.columns[:4]) == ["layer", "neuron", "label", "cosine"]


def test_removal_matches_the_record(planted):
    """The median is the per-token ratio's, recomputed here from the record directly."""
    w = planted.run_with_writes(TEXTS[:4])
    df = interp.neuron_verdicts(planted, w).set_index("label")
    for ly, n in DELETERS[:2]:
        x = w.resid(ly, "mid" if not planted.cfg.parallel else "pre")[w.mask].double()
        u = planted.weights.mlp_in(ly)[:, n].double()
        u = u / u.norm()
        a = w.acts[ly][..., n][w.mask].double()
        gate = planted.weights.mlp_gate(ly)
        fire = (x @ gate[:, n].double() > 0) if gate is not None else a > 0
        r = (-a * (planted.weights.mlp_out(ly)[n].double() @ u) / (x @ u))[fire]
        row = df.loc[f"L{ly}N{n}"]
        assert row["n_firing"] == int(fire.sum())
        assert abs(row["removed_median"] - float(r.median())) <= BIN + 1e-9
        assert row["erase_share"] == pytest.approx(float((r >= 0.3).double().mean()), abs=1e-12)


def test_stack_and_no_data_give_the_screen(tiny_model):
    df = interp.neuron_verdicts(tiny_model, False)
    assert (df["verdict"] == "unmeasured").all() and df["flagged"].equals(df["screen"])


def test_verdict_figure(planted):
    fig = interp.plots.neuron_verdicts(interp.neuron_verdicts(planted, TEXTS))
    names = {t.name.split(" (")[0] for t in fig.data}
    assert "deleting" in names and "amplifying" in names


@pytest.mark.parametrize("kw, match", [
    (dict(min_removed=0), "min_removed"), (dict(max_removed=0.2), "max_removed"),
    (dict(max_tokens=0), "max_tokens"),
])
def test_bad_options(gpt2_model, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        interp.neuron_verdicts(gpt2_model, TEXTS[:1], **kw)
