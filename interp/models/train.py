"""Train the embedded default model from scratch: ``python -m interp.models.train --out DIR``.

The defaults are the shipped recipe (see ``stdlib_lm/MODEL_CARD.md``):
a byte-level BPE on the stdlib train split, then a 2-layer GPT-NeoX trained in two
phases. Phase 1 trains only on repeated random tokens (BOS + S + S, len(S) varied)
until induction heads form; phase 2 trains on stdlib text with a fraction of
repeated-random rows kept in every batch. AdamW, linear warmup then cosine decay,
fixed seeds; every batch is a function of (seed, step), so ``--resume`` continues
a run exactly from its last checkpoint.

Writes into DIR: ``tokenizer.json`` etc, ``log.jsonl`` (one line per logged step),
``checkpoint/`` (weights, optimizer state, step), and ``model/`` (the final
Hugging Face checkpoint with tokenizer).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from interp._progress import tqdm
from interp.data import iter_texts
from interp.models import measure
from interp.models.synthetic import repeated_batch
from interp.models.tokenizer import save_tokenizer, train_tokenizer

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m interp.models.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    g = p.add_argument_group("tokenizer and model")
    g.add_argument("--vocab-size", type=int, default=512)
    g.add_argument("--d-model", type=int, default=128)
    g.add_argument("--n-layers", type=int, default=2)
    g.add_argument("--n-heads", type=int, default=4)
    g.add_argument("--d-mlp", type=int, default=512)
    g.add_argument("--rotary-pct", type=float, default=0.25)
    g.add_argument("--n-ctx", type=int, default=256, help="context length and text row length")
    g = p.add_argument_group("phase 1: repeated random tokens")
    g.add_argument("--phase1-steps", type=int, default=900)
    g.add_argument("--batch-size", type=int, default=64, help="rows per phase-1 batch")
    g.add_argument("--min-len", type=int, default=8, help="shortest repeated segment")
    g.add_argument("--max-len", type=int, default=60, help="longest repeated segment")
    g.add_argument(
        "--heldout-lengths",
        type=str,
        default="37,45",
        help="segment lengths never trained on (comma separated); induction is measured at the first",
    )
    g = p.add_argument_group("phase 2: stdlib text + repeated random rows")
    g.add_argument("--phase2-steps", type=int, default=1200)
    g.add_argument("--text-batch", type=int, default=24, help="text rows per phase-2 batch")
    g.add_argument("--synthetic-batch", type=int, default=8, help="repeated-random rows per phase-2 batch")
    g.add_argument(
        "--synthetic-weight",
        type=float,
        default=0.25,
        help="phase-2 loss = (1 - w) * text loss + w * synthetic loss",
    )
    g = p.add_argument_group("optimiser")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--min-lr", type=float, default=1e-4)
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g = p.add_argument_group("logging")
    g.add_argument("--eval-every", type=int, default=100)
    g.add_argument("--save-every", type=int, default=100)
    g.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="save and exit after this many steps in this invocation (continue with --resume)",
    )
    return p


def make_config(args, bos_id: int):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.d_model,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        intermediate_size=args.d_mlp,
        max_position_embeddings=args.n_ctx,
        rotary_pct=args.rotary_pct,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
        pad_token_id=bos_id,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )


def lr_at(step: int, args) -> float:
    """Phase 1: linear warmup to ``lr``, then constant. Phase 2: cosine from ``lr`` to ``min_lr``.

    Phase 1 does not depend on the length of phase 2, so a phase-1 checkpoint can
    be continued with any ``--phase2-steps``.
    """
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if step < args.phase1_steps:
        return args.lr
    progress = (step - args.phase1_steps) / max(args.phase2_steps, 1)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def load_corpus(tokenizer) -> torch.Tensor:
    """The stdlib train split as one Long[n_tokens] stream, documents separated by EOS."""
    eos = tokenizer.eos_token_id
    pieces = []
    for _, text in iter_texts("stdlib:train"):
        pieces.append(
            torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [eos])
        )
    return torch.cat(pieces)


def text_rows(corpus: torch.Tensor, n_rows: int, n_ctx: int, bos: int, generator) -> torch.Tensor:
    """Random windows of the corpus, each BOS + n_ctx - 1 tokens: Long[n_rows, n_ctx]."""
    starts = torch.randint(0, len(corpus) - n_ctx, (n_rows,), generator=generator)
    body = torch.stack([corpus[s : s + n_ctx - 1] for s in starts.tolist()])
    return torch.cat([torch.full((n_rows, 1), bos, dtype=torch.long), body], dim=1)


def lm_loss(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over real target tokens."""
    logits = model(input_ids=tokens, attention_mask=mask).logits
    target_mask = mask[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return (losses * target_mask).sum() / target_mask.sum()


def train_lengths(args) -> list[int]:
    heldout = {int(x) for x in args.heldout_lengths.split(",") if x}
    return [n for n in range(args.min_len, args.max_len + 1) if n not in heldout]


def step_loss(model, step: int, args, corpus, bos: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one training step; its batch depends only on (seed, step)."""
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    lengths = train_lengths(args)
    if step < args.phase1_steps:
        tokens, mask = repeated_batch(
            args.batch_size, vocab_size=args.vocab_size, lengths=lengths, generator=g, bos_id=bos
        )
        loss = lm_loss(model, tokens, mask)
        return loss, {"phase": 1, "loss_synthetic": loss.item()}
    text = text_rows(corpus, args.text_batch, args.n_ctx, bos, g)
    text_loss = lm_loss(model, text, torch.ones_like(text, dtype=torch.bool))
    record = {"phase": 2, "loss_text": text_loss.item()}
    if args.synthetic_batch == 0:
        return text_loss, record
    tokens, mask = repeated_batch(
        args.synthetic_batch, vocab_size=args.vocab_size, lengths=lengths, generator=g, bos_id=bos
    )
    syn_loss = lm_loss(model, tokens, mask)
    record["loss_synthetic"] = syn_loss.item()
    w = args.synthetic_weight
    return (1 - w) * text_loss + w * syn_loss, record


@torch.no_grad()
def evaluate(model, args, val, tokenizer=None) -> dict[str, float]:
    """Held-out text loss and the phenomena, on small fixed batches."""
    model.eval()
    tokens, mask = val
    length = int(args.heldout_lengths.split(",")[0]) if args.heldout_lengths else 37
    logits = model(input_ids=tokens).logits
    val_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:]).item()
    imodel = measure.as_model(model.eval(), tokenizer)  # interp.head_scores: the one definition of each score
    prev = measure.prev_token_scores(imodel, tokens, mask)
    ind = measure.induction_scores(imodel, length, batch=8, seed=1)
    first, second = measure.copy_losses(model, length, batch=8, seed=1)
    model.train()
    return {
        "val_loss": val_loss,
        "prev_token_best": float(prev.max()),
        "prev_token_layer0": float(prev[0].max()),
        "induction_best": float(ind[1:].max()) if len(ind) > 1 else float("nan"),
        "loss_first_copy": first,
        "loss_second_copy": second,
    }


def save_checkpoint(model, optimizer, step: int, path: Path) -> None:
    """Weights (HF format), AdamW moments as safetensors, and the step, in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tensors, meta = {}, {"step": step}
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{i}.{key}"] = value.detach().clone().contiguous()
    save_file(tensors, str(path / "optimizer.safetensors"))
    (path / "state.json").write_text(json.dumps(meta))


def load_optimizer(optimizer, path: Path) -> int:
    """Restore the optimizer state saved by ``save_checkpoint``; return its step."""
    tensors = load_file(str(path / "optimizer.safetensors"))
    state = optimizer.state_dict()
    new_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        new_state.setdefault(int(i), {})[name] = value
    state["state"] = new_state
    optimizer.load_state_dict(state)
    return json.loads((path / "state.json").read_text())["step"]


def run(args) -> Path:
    """Train per ``args`` and return the directory of the final checkpoint."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(args.threads)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.resume and (out / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
    else:
        tokenizer = train_tokenizer("stdlib:train", vocab_size=args.vocab_size)
        save_tokenizer(tokenizer, out)
    bos = tokenizer.bos_token_id
    recipe = {k: v for k, v in vars(args).items() if k not in ("out", "resume", "threads")}
    (out / "train_args.json").write_text(json.dumps(recipe, indent=1))
    corpus = load_corpus(tokenizer) if args.phase2_steps else None
    val = measure.val_tokens(tokenizer, n_rows=16, n_ctx=args.n_ctx)

    resume = args.resume and (out / "checkpoint" / "state.json").exists()
    torch.manual_seed(args.seed)
    if resume:
        model = AutoModelForCausalLM.from_pretrained(
            str(out / "checkpoint"), dtype=torch.float32, attn_implementation="sdpa"
        )
    else:
        model = AutoModelForCausalLM.from_config(make_config(args, bos), attn_implementation="sdpa")
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    start = 0
    if resume:
        start = load_optimizer(optimizer, out / "checkpoint")
        logger.info("resumed at step %d", start)
    elif not args.resume:
        (out / "log.jsonl").unlink(missing_ok=True)
    total = args.phase1_steps + args.phase2_steps
    model.train()
    t0 = time.time()
    log = (out / "log.jsonl").open("a")
    bar = tqdm(range(start, total), initial=start, total=total, desc="train", mininterval=10)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        loss, record = step_loss(model, step, args, corpus, bos)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        record.update(
            step=step + 1,
            lr=optimizer.param_groups[0]["lr"],
            loss=loss.item(),
            seconds=round(time.time() - t0, 1),
        )
        if (step + 1) % args.eval_every == 0 or step + 1 == total:
            record.update(evaluate(model, args, val, tokenizer))
            bar.set_postfix(
                ind=f"{record['induction_best']:.2f}",
                prev=f"{record['prev_token_best']:.2f}",
                val=f"{record['val_loss']:.2f}",
            )
        if (step + 1) % 10 == 0 or "val_loss" in record:
            log.write(json.dumps(record) + "\n")
            log.flush()
        stopping = args.stop_after is not None and step + 1 - start >= args.stop_after
        if (step + 1) % args.save_every == 0 or step + 1 == total or stopping:
            save_checkpoint(model, optimizer, step + 1, out / "checkpoint")
            save_tokenizer(tokenizer, out / "checkpoint")
        if stopping and step + 1 < total:
            log.close()
            return out / "checkpoint"
    log.close()
    final = out / "model"
    if final.exists():
        shutil.rmtree(final)
    model.save_pretrained(str(final))
    save_tokenizer(tokenizer, final)
    shutil.copy(out / "log.jsonl", final / "training_log.jsonl")
    shutil.copy(out / "train_args.json", final / "train_args.json")
    return final


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
