"""Measurements of the phenomena the embedded model must show.

The training script, the tests and the model card share one definition of each number.
Head scores (previous-token, induction) are ``interp.head_scores`` run on an
``interp.Model`` of the checkpoint; the rest is plain torch on the Hugging Face GPT-NeoX
model: loss on the first vs second copy of a repeated random sequence, linear
decodability of the previous token, and MLP neuron in/out cosines against a random-init
baseline.

Examples:
    >>> from interp.models import DEFAULT_MODEL_DIR
    >>> model, tok = load_hf(DEFAULT_MODEL_DIR)
    >>> induction_scores(model, length=37, tokenizer=tok).max()
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from interp._linalg import solve_spd
from interp.models.synthetic import repeated_tokens


def load_hf(path: str | Path):
    """Load ``(model, tokenizer)`` from a local checkpoint directory, eval mode, fp32."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    path = Path(path).resolve()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
    return model.eval(), PreTrainedTokenizerFast.from_pretrained(str(path))


def _neox(model):
    base = getattr(model, "gpt_neox", None)
    if base is None:
        raise TypeError(f"model is {type(model).__name__}; these measurements expect a GPT-NeoX causal LM")
    return base


def as_model(model, tokenizer):
    """An ``interp.Model`` of a Hugging Face causal LM (a copy; the caller's model is untouched)."""
    from interp.load import load

    return load(model, tokenizer=tokenizer, device="cpu", fast=True)


def head_score_matrix(model, tokenizer, kind: str, tokens: torch.Tensor, mask: torch.Tensor | None = None):
    """``interp.head_scores`` (the one definition of each head score) as ``Float[layer, head]``."""
    from interp.heads import head_scores
    from interp.tokens import Tokens

    m = model if hasattr(model, "run_with_writes") else as_model(model, tokenizer)
    mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
    df = head_scores(m, kind, data=Tokens(tokens, mask)).sort_values(["layer", "head"])
    return torch.tensor(df["score"].to_numpy(), dtype=torch.float32).reshape(m.cfg.n_layers, m.cfg.n_heads)


def prev_token_scores(model, tokens: torch.Tensor, mask: torch.Tensor | None = None, *, tokenizer=None):
    """``head_scores(kind="previous_token")`` on these rows: Float[layer, head]."""
    return head_score_matrix(model, tokenizer, "previous_token", tokens, mask)


def induction_scores(model, length: int, *, batch: int = 16, seed: int = 0, tokenizer=None):
    """``head_scores(kind="induction")`` on BOS + S + S with ``len(S) = length``: Float[layer, head]."""
    vocab = model.cfg.d_vocab if hasattr(model, "cfg") else model.config.vocab_size
    tokens = repeated_tokens(batch, length, vocab_size=vocab, seed=seed)
    return head_score_matrix(model, tokenizer, "induction", tokens)


@torch.no_grad()
def copy_losses(model, length: int, *, batch: int = 16, seed: int = 0) -> tuple[float, float]:
    """Mean next-token loss (nats) on the first and on the second copy of S.

    Both leave out the first token of their copy, which nothing can predict.
    """
    tokens = repeated_tokens(batch, length, vocab_size=model.config.vocab_size, seed=seed)
    logits = model(input_ids=tokens).logits.float()
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    # losses[:, p] predicts token p + 1; first copy occupies 1..L, second L+1..2L
    first = losses[:, 1:length].mean()
    second = losses[:, length + 1 : 2 * length].mean()
    return float(first), float(second)


@torch.no_grad()
def mean_loss(
    model,
    tokenizer,
    source="stdlib:val",
    *,
    n_ctx: int = 256,
    max_tokens: int = 100_000,
    batch_size: int = 16,
    progress: bool = False,
) -> float:
    """Mean next-token loss in nats over a source (see ``interp.data.token_batches``)."""
    from interp.data import token_batches

    total, count = 0.0, 0
    for batch in token_batches(
        tokenizer, source, n_ctx=n_ctx, batch_size=batch_size, max_tokens=max_tokens, progress=progress,
        min_tokens=16,  # the model card's numbers: rows of at least 16 tokens
    ):
        logits = model(input_ids=batch.tokens, attention_mask=batch.mask).logits.float()
        target_mask = batch.mask[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch.tokens[:, 1:], reduction="none")
        total += float(losses[target_mask].sum())
        count += int(target_mask.sum())
    return total / max(count, 1)


def _ridge_accuracy(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, train: torch.Tensor, ridge: float
) -> float:
    """Held-out accuracy of a ridge least-squares classifier (one-hot targets)."""
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    mean[-1], std[-1] = 0.0, 1.0
    x = (x - mean) / std
    targets = F.one_hot(y, n_classes).double()
    gram = x[train].T @ x[train] + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    weights = solve_spd(gram, x[train].T @ targets[train])
    predicted = (x[~train] @ weights).argmax(-1)
    return float((predicted == y[~train]).float().mean())


@torch.no_grad()
def prev_token_decodability(
    model,
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    train_fraction: float = 0.7,
    ridge: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out accuracy of linear decoders of the previous token's id.

    Decodes token ``t[i-1]`` from the stream at ``i`` (i >= 1) read at two points:
    ``embed`` (the token embedding alone) and ``after_attn0`` (embedding plus the
    layer-0 attention output). ``majority`` is the most-frequent-class baseline.
    """
    captured = {}
    attn = _neox(model).layers[0].attention
    handle = attn.register_forward_hook(lambda m, i, o: captured.__setitem__("attn", o[0]))
    try:
        out = model(input_ids=tokens, attention_mask=mask, output_hidden_states=True)
    finally:
        handle.remove()
    embed = out.hidden_states[0].float()
    after = embed + captured["attn"].float()
    keep = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.clone()
    keep[:, 0] = False
    y = tokens[:, :-1][keep[:, 1:]]
    n = len(y)
    train = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < train_fraction
    n_classes = model.config.vocab_size
    majority = float((y[~train] == y[train].mode().values).float().mean())
    return {
        "embed": _ridge_accuracy(embed[keep], y, n_classes, train, ridge),
        "after_attn0": _ridge_accuracy(after[keep], y, n_classes, train, ridge),
        "majority": majority,
    }


def inout_cosines(model) -> list[torch.Tensor]:
    """Per layer, cos(W_in[:, n], W_out[n]) for every MLP neuron: list of Float[d_mlp]."""
    result = []
    for layer in _neox(model).layers:
        w_in = layer.mlp.dense_h_to_4h.weight.detach().float()  # [d_mlp, d_model]
        w_out = layer.mlp.dense_4h_to_h.weight.detach().float().T  # [d_mlp, d_model]
        result.append(F.cosine_similarity(w_in, w_out, dim=-1))
    return result


def random_init_cosines(config, *, seed: int = 0) -> list[torch.Tensor]:
    """The same cosines for a freshly initialised model of the same config."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return inout_cosines(AutoModelForCausalLM.from_config(config))


def cosine_summary(cosines: list[torch.Tensor]) -> list[dict[str, float]]:
    """Per-layer distribution statistics of neuron in/out cosines."""
    rows = []
    for layer, c in enumerate(cosines):
        q = torch.quantile(c, torch.tensor([0.01, 0.5, 0.99]))
        rows.append(
            {
                "layer": layer,
                "mean": float(c.mean()),
                "std": float(c.std()),
                "min": float(c.min()),
                "q01": float(q[0]),
                "median": float(q[1]),
                "q99": float(q[2]),
                "max": float(c.max()),
                "frac_below_-0.3": float((c < -0.3).float().mean()),
            }
        )
    return rows


def val_tokens(tokenizer, *, n_rows: int = 16, n_ctx: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out stdlib text, the first full window of each of ``n_rows`` files: Long[n_rows, n_ctx]."""
    from interp.data import token_batches

    rows, docs = [], set()
    for batch in token_batches(
        tokenizer, "stdlib:val", n_ctx=n_ctx, batch_size=1, progress=False, min_tokens=n_ctx
    ):
        if batch.doc_ids[0] not in docs:
            docs.add(batch.doc_ids[0])
            rows.append(batch.tokens[0])
        if len(rows) == n_rows:
            break
    tokens = torch.stack(rows)
    return tokens, torch.ones_like(tokens, dtype=torch.bool)


def expected_random_cosine_std(d_model: int) -> float:
    """Std of the cosine between two independent random vectors in d_model dims."""
    return 1.0 / math.sqrt(d_model)


def summarize(path: str | Path, *, lengths=(37, 45, 100), val_tokens_max: int | None = None) -> dict:
    """Every number the model card reports, for the checkpoint at ``path``."""
    model, tokenizer = load_hf(path)
    imodel = as_model(model, tokenizer)
    tokens, mask = val_tokens(tokenizer, n_rows=16, n_ctx=256)
    prev = prev_token_scores(imodel, tokens, mask)
    result = {
        "val_loss_nats_per_token": mean_loss(model, tokenizer, "stdlib:val", max_tokens=val_tokens_max),
        "prev_token_scores": prev.tolist(),
        "prev_token_decodability": prev_token_decodability(model, tokens, mask),
        "induction": {},
        "inout_cosines": cosine_summary(inout_cosines(model)),
        "inout_cosines_random_init": cosine_summary(random_init_cosines(model.config, seed=0)),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": (Path(path) / "model.safetensors").stat().st_size,
    }
    for length in lengths:
        first, second = copy_losses(model, length, batch=16, seed=123)
        result["induction"][str(length)] = {
            "scores": induction_scores(imodel, length, batch=16, seed=123).tolist(),
            "loss_first_copy": first,
            "loss_second_copy": second,
        }
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m interp.models.measure DIR --out metrics.json``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m interp.models.measure", description=summarize.__doc__)
    parser.add_argument("path", type=Path, help="checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.write_text(json.dumps(summarize(args.path), indent=1))


if __name__ == "__main__":
    main()
