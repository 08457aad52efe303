"""Head scores computed independently of interp: the checkpoint's own eager attention
(``output_attentions=True`` on a transformers model loaded from the same weights) and
plain Python loops over queries."""

from __future__ import annotations

import torch


def eager_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()


@torch.no_grad()
def hf_patterns(hf, tokens: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """``[layer, batch, head, query, key]`` from ``output_attentions=True`` (no attention mask:
    the rows are right-padded, so real queries never see padding)."""
    outs = []
    for a in range(0, len(tokens), batch_size):
        out = hf(input_ids=tokens[a:a + batch_size], output_attentions=True)
        outs.append(torch.stack([t.float() for t in out.attentions]))
    return torch.cat(outs, dim=1)


def reference_scores(A: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """``[layer, head]`` mean attention on each kind's target, query by query."""
    total = torch.zeros(A.shape[0], A.shape[2], dtype=torch.float64)
    count = 0
    for b in range(tokens.shape[0]):
        n = int(mask[b].sum())
        t = tokens[b, :n].tolist()
        for q in range(1, n):
            if kind == "previous_token":
                keys = [q - 1]
            elif kind == "self":
                keys = [q]
            elif kind == "bos":
                keys = [0]
            elif kind == "duplicate_token":
                keys = [k for k in range(q) if t[k] == t[q]]
            else:  # induction: the token after an earlier copy of token q
                keys = [k + 1 for k in range(q) if t[k] == t[q]]
            if not keys:
                continue
            total += A[:, b, :, q, keys].double().sum(-1)
            count += 1
    return total / count
