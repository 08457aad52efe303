"""Head detectors and deleting heads on SmolLM2-135M (9 query / 3 KV heads, rotary), against
output_attentions=True on a transformers model loaded from the same converted checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from heads_reference import eager_model, hf_patterns, reference_scores

import interp
from interp.heads.data import repeated_tokens, text_tokens

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf(smollm2):
    from interp.gguf import converted_checkpoint

    path, _ = converted_checkpoint(Path(smollm2.source["gguf_file"]), progress=False)
    return eager_model(path)


@pytest.mark.parametrize("kind", ["previous_token", "induction"])
def test_top_heads_and_scores_match_eager_attention(smollm2, hf, kind):
    if kind == "induction":
        toks = repeated_tokens(smollm2, n_rows=4, lengths=range(8, 17))
    else:
        toks = text_tokens(smollm2, n_rows=2, n_ctx=64)
    df = interp.head_scores(smollm2, kind, data=toks)
    ref = reference_scores(hf_patterns(hf, toks.tokens, batch_size=2), toks.tokens, toks.mask, kind)
    got = torch.tensor(df.sort_values(["layer", "head"])["score"].to_numpy()).reshape(ref.shape)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    top = df.iloc[0]
    assert top["layer"] * ref.shape[1] + top["head"] == int(ref.argmax())
    assert top["score"] > 0.5 and top["flagged"]


def test_deleting_heads_rest_on_data(smollm2):
    """Judged on data: every flagged head's median query loses 30-150% of what it reads, it is
    the verdict 'deleting', and the top previous-token head (which amplifies) is not flagged."""
    df = interp.find_deleting_heads(smollm2, max_tokens=512, n_ctx=128).set_index("label")
    flagged = df[df["flagged"]]
    assert len(flagged) >= 1, df.sort_values("removed_median").tail(5)
    assert (flagged["verdict"] == "deleting").all()
    assert ((flagged["removed_median"] >= 0.3) & (flagged["removed_median"] <= 1.5)).all()
    assert not df.loc["L16H0", "flagged"]
