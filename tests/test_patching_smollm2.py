"""On SmolLM2-135M: patched values agree with plain torch hooks on the HF model, attribution
matches autograd for one layer, and ablating its top deleting neuron moves the erased
direction by what the weights predict. A few components only, to keep the cost low."""

from __future__ import annotations

import pytest
from test_patching_activation import _check_against_hf
from test_patching_attribution import _hf_attribution

import interp

CLEAN = "def compute(items):\n    total = 0\n    for item in items:\n        total += item\n    return"
CORRUPT = "def compute(items):\n    result = 0\n    for item in items:\n        result += item\n    return"

pytestmark = pytest.mark.slow


def test_patching_agrees_with_plain_hooks(smollm2):
    m = smollm2
    clean, corrupt = m.to_tokens(CLEAN).tokens, m.to_tokens(CORRUPT).tokens
    ids = tuple(int(m.to_tokens(a, prepend_bos=False).tokens[0, 0]) for a in (" total", " result"))
    _check_against_hf(m, clean, corrupt, ids, [("head", 23, 0, None), ("neuron", 20, 7, 18), ("resid", 24, -1, 7)])
    att = interp.attribution_patching(m, clean, corrupt, answers=ids, by="head", layers=[23])
    heads, _, _ = _hf_attribution(m, clean, corrupt, ids, 23)
    got = att["approximation"].to_numpy()
    assert abs(got - heads.double().numpy()).max() <= 1e-5 * max(1.0, float(heads.abs().max()))


def test_top_deleting_neuron_by_its_weights(smollm2):
    top = interp.find_deleting_neurons(smollm2).iloc[0]
    df = interp.deletion_effect(smollm2, top, [CLEAN, CORRUPT], n_controls=1, layers=[int(top["layer"]) + 1],
                                progress=False)
    d = df[df.role == "deleter"].iloc[0]
    assert abs(d.change - d.predicted) < 1e-4 * max(1.0, abs(d.predicted))
