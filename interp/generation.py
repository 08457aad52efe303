"""Text generation, greedy or sampled, batched, with stop tokens and strings, and with
components ablated or patched while it generates.

Every step is one full forward of the prompt plus what has been generated so far, through
the same runner that activation patching uses (``interp.patching._runner``): on the
checkpoint's own module when the model keeps one, through the TransformerLens bridge when
hooks are active (inside ``interp.ablate``) or the model has no raw module. Recomputing
every position, instead of caching keys and values, keeps an edit that applies at every
position exact: the prompt's positions see the edit in the step that reads them, just as in
one forward of the whole text. The cost grows with the square of the length, which is small
next to the analyses interp runs on what was generated.

A batch is right-padded: each row's next token is read at its own last position, and causal
attention means the padding after it changes nothing (so a batch generates what its prompts
generate one by one, up to the rounding of a wider matrix product).

>>> model = interp.load()
>>> text = model.generate("def add(a, b):", max_new_tokens=8)          # greedy: a str
>>> g = interp.generate_tokens(model, ["x = ", "def f("], max_new_tokens=8, temperature=0.8, seed=0)
>>> list(g.to_frame().columns)[:3]
['row', 'prompt', 'completion']
>>> w = model.run_with_writes(g.batch)                                 # the record of what was generated
>>> w.tokens.shape == g.tokens.shape
True
>>> ablated = model.generate("def add(a, b):", max_new_tokens=8, ablate=["L1H2", "L0N5"])
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from interp import _labels as labels
from interp._checks import check_float, check_index, check_int
from interp._threads import with_analysis_threads
from interp.tokens import Tokens, pad_rows

STOP_REASONS = ("stop_token", "stop_string", "max_new_tokens")
FRAME_COLUMNS = ["row", "prompt", "completion", "n_prompt_tokens", "n_new_tokens", "stop_reason"]


@dataclass(frozen=True)
class Generation:
    """What ``generate_tokens`` produced.

    Attributes:
        prompts: the prompt texts (``None`` for token-id prompts).
        completions: the generated text of each row, cut before a stop string and without a
            stop token.
        tokens: ``[batch, pos]`` prompt then generated ids, right-padded; mask: ``[batch, pos]``
            True on real tokens (the stop token, when one ended the row, included).
        prompt_lengths: tokens of each row's prompt (BOS included).
        stop_reasons: ``"stop_token"``, ``"stop_string"`` or ``"max_new_tokens"`` per row.
    """

    prompts: list[str] | None
    completions: list[str] | None
    tokens: Tensor
    mask: Tensor
    prompt_lengths: list[int]
    stop_reasons: list[str]

    @property
    def batch(self) -> Tokens:
        """Prompt plus completion as a ``Tokens`` batch: ``model.run_with_writes(g.batch)``
        records every write of the generated text in one call."""
        return Tokens(self.tokens, self.mask)

    @property
    def texts(self) -> list[str] | None:
        """Prompt plus completion per row (``None`` without prompt texts)."""
        if self.prompts is None or self.completions is None:
            return None
        return [p + c for p, c in zip(self.prompts, self.completions)]

    @property
    def new_tokens(self) -> list[list[int]]:
        """The generated ids of each row (a stop token included)."""
        return [row[n:int(m.sum())].tolist() for row, m, n in zip(self.tokens, self.mask, self.prompt_lengths)]

    def to_frame(self) -> pd.DataFrame:
        """One row per prompt: row, prompt, completion, n_prompt_tokens, n_new_tokens, stop_reason."""
        n = len(self.prompt_lengths)
        return pd.DataFrame(dict(
            row=range(n), prompt=self.prompts or [None] * n, completion=self.completions or [None] * n,
            n_prompt_tokens=self.prompt_lengths, n_new_tokens=[len(t) for t in self.new_tokens],
            stop_reason=self.stop_reasons,
        ), columns=FRAME_COLUMNS)


# ---- interventions ---------------------------------------------------------------------------
def _component(model: Any, name: str, label: Any) -> tuple[tuple[str, int], int | None]:
    """``"L1H2"`` -> (("z", 1), 2); ``"L1N5"`` -> (("act", 1), 5); ``"L1_attn"`` / ``"L1_mlp"``
    -> the layer's output, index None."""
    comp = labels.parse(name, label, model.cfg, kinds=("head", "neuron", "attn", "mlp"))
    site = {"head": "z", "neuron": "act"}.get(comp.kind, comp.kind)
    return (site, comp.layer), comp.index


def _value(model: Any, label: str, site: tuple[str, int], v: Any) -> Tensor:
    c = model.cfg
    want = {"z": (c.d_head,), "act": (), "attn": (c.d_model,), "mlp": (c.d_model,)}[site[0]]
    t = torch.as_tensor(v, dtype=torch.float32) if not isinstance(v, Tensor) else v.detach()
    if tuple(t.shape) != want or not t.is_floating_point() or not torch.isfinite(t).all():
        raise ValueError(f"patch[{label!r}] must be a finite float tensor of shape {list(want)} (the "
                         f"{'head z' if site[0] == 'z' else 'activation' if site[0] == 'act' else 'layer output'}), "
                         f"got {getattr(t, 'shape', type(v).__name__)}")
    return t


def edits(model: Any, *, ablate: Any = None, patch: Mapping[str, Any] | None = None,
          z_shift: Tensor | None = None) -> dict[tuple[str, int], list]:
    """Runner edits that set components at every position: ``ablate`` (labels) to zero, the
    labels of ``patch`` to the given values. A head's zero is its processed ``z`` (its write
    ``z @ W_O`` is zero; a raw value bias stays in the bias, as in the record): ``z_shift``
    ``[layer, head, d_head]`` is the raw-minus-processed ``z`` of the backend that runs."""
    if ablate is None:
        ablate = []
    if isinstance(ablate, str):
        ablate = [ablate]
    if not isinstance(ablate, (list, tuple)):
        raise TypeError(f"ablate={ablate!r} must be a label such as 'L1H2' or a list of labels")
    if patch is not None and not isinstance(patch, Mapping):
        raise TypeError(f"patch={patch!r} must be a dict {{label: value}}, e.g. {{'L1N5': 2.0}}")
    plan: dict[tuple[str, int], list[tuple[int | None, Tensor | None]]] = {}
    for label in ablate:
        site, idx = _component(model, "ablate", label)
        plan.setdefault(site, []).append((idx, None))
    for label, v in (patch or {}).items():
        site, idx = _component(model, "patch", label)
        plan.setdefault(site, []).append((idx, _value(model, label, site, v)))
    out: dict[tuple[str, int], list] = {}
    for site, items in plan.items():
        def edit(t: Tensor, site=site, items=items) -> Tensor:
            t = t.clone()
            for idx, v in items:
                if site[0] == "z":
                    shift = z_shift[site[1], idx] if z_shift is not None else 0.0
                    t[..., idx, :] = (v.to(t) if v is not None else 0.0) + torch.as_tensor(shift).to(t)
                elif idx is not None:
                    t[..., idx] = v.to(t) if v is not None else 0.0
                else:
                    t[...] = v.to(t) if v is not None else 0.0
            return t
        out[site] = [edit]
    return out


# ---- sampling --------------------------------------------------------------------------------
def _next(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
          gens: list[torch.Generator]) -> Tensor:
    """Next ids ``[rows]`` from last-position logits ``[rows, d_vocab]``: argmax at
    ``temperature=0``, else a draw from softmax(logits / T) restricted to the ``top_k`` most
    likely ids and the smallest set whose mass reaches ``top_p`` (each row its own generator)."""
    if temperature == 0:
        return logits.argmax(-1)
    x = logits.double() / temperature
    if top_k is not None and top_k < x.shape[-1]:
        kth = x.topk(top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        p, order = x.softmax(-1).sort(-1, descending=True)
        drop = (p.cumsum(-1) - p) >= top_p  # ids after the mass is reached; the first always stays
        x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = x.softmax(-1).cpu()
    return torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(gens)])


def _stops(model: Any, stop: Any) -> tuple[set[int], list[str]]:
    tok = model.tokenizer
    if stop is None:
        eos = getattr(tok, "eos_token_id", None) if tok is not None else None
        return ({int(eos)} if eos is not None else set()), []
    items = [stop] if isinstance(stop, (str, int)) and not isinstance(stop, bool) else stop
    if not isinstance(items, (list, tuple, set)):
        raise TypeError(f"stop={stop!r} must be a token id, a string, or a list of them ([] to stop only at "
                        "max_new_tokens)")
    ids, strings = set(), []
    for s in items:
        if isinstance(s, str):
            if not s:
                raise ValueError("stop holds an empty string, which every text contains; drop it")
            if tok is None:
                raise ValueError(f"stop={s!r} is a string but this model has no tokenizer; pass token ids")
            strings.append(s)
        else:
            ids.add(check_index("stop", s, model.cfg.d_vocab, "token id"))
    return ids, strings


def _backend(model: Any, plan: dict) -> tuple[str | None, Tensor | None]:
    """The runner backend and the z shift its head edits need."""
    if model.active_hooks() or getattr(model, "_fast", None) is None:
        return "bridge", None  # hooks (interp.ablate, model.hooks) live on the bridge
    if any(site[0] == "z" for site in plan):
        if not model._fast_ready:  # the shift is measured when the fast record is calibrated
            return "bridge", None
        return "raw", model._fast.z_shift
    return "raw", None


@with_analysis_threads
def generate_tokens(
    model: Any,
    prompt: Any,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop: Any = None,
    seed: int | None = None,
    prepend_bos: bool | None = None,
    ablate: Any = None,
    patch: Mapping[str, Any] | None = None,
) -> Generation:
    """Generate from ``prompt`` and return the text and the tokens (a ``Generation``).

    Args:
        prompt: a str, a list of str (a batch), or a LongTensor ``[batch, pos]`` of ids (used
            exactly as given; every row a full prompt).
        max_new_tokens: tokens to generate at most per row.
        temperature: 0 (default): greedy, the argmax; above 0: sample from softmax(logits / T).
        top_k / top_p: sample among the ``top_k`` most likely tokens / the smallest set whose
            probability reaches ``top_p`` (None: no limit).
        stop: token ids and/or strings that end a row: the token is kept in ``tokens`` but
            not in the text; the text is cut before a stop string. Default: the tokenizer's EOS.
            ``[]``: only ``max_new_tokens`` ends a row.
        seed: seeds the sampling (row ``i`` draws from its own generator seeded ``seed + i``,
            so a row does not depend on the rows beside it); the global RNG is never touched.
            None: a fresh seed each call.
        prepend_bos: as ``Model.to_tokens`` (default True for strings).
        ablate: components set to zero at every position while generating: labels ``"L1H2"``
            (a head's ``z``, so its write is zero), ``"L1N5"`` (a neuron's activation),
            ``"L1_attn"`` / ``"L1_mlp"`` (a layer's whole output). For a subspace, generate
            inside ``with interp.ablate(model, subspace, at=...)``.
        patch: ``{label: value}``: components set to a value at every position: a head's
            ``z`` ``[d_head]`` (processed convention, as in the record), a neuron's activation
            (a number), a layer's output ``[d_model]`` (e.g. a mean from the record).
    Raises:
        ValueError: a prompt plus ``max_new_tokens`` longer than the model's context, an
            unknown component, a value of the wrong shape.
    """
    c = model.cfg
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    temperature = check_float("temperature", temperature, minimum=0)
    top_k = check_int("top_k", top_k, minimum=1, allow_none=True)
    top_p = check_float("top_p", top_p, minimum=0, maximum=1, min_open=True, allow_none=True)
    seed = check_int("seed", seed, minimum=0, allow_none=True)
    stop_ids, stop_strings = _stops(model, stop)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    toks = model.to_tokens(prompt, prepend_bos=prepend_bos)
    lengths = toks.lengths
    if max(lengths) + max_new_tokens > c.n_ctx:
        raise ValueError(f"max_new_tokens={max_new_tokens} after a prompt of {max(lengths)} tokens exceeds the "
                         f"model's context of {c.n_ctx}; pass max_new_tokens <= {c.n_ctx - max(lengths)} or a "
                         "shorter prompt")
    from interp.patching._runner import Runner

    backend, shift = _backend(model, {} if ablate is None and patch is None else
                              edits(model, ablate=ablate, patch=patch))
    plan = edits(model, ablate=ablate, patch=patch, z_shift=shift)
    runner = Runner(model, backend=backend)
    base = secrets.randbits(62) if seed is None else seed
    gens = [torch.Generator().manual_seed(base + i) for i in range(len(lengths))]
    rows = [toks.tokens[i, :n].tolist() for i, n in enumerate(lengths)]
    decode = model.tokenizer.decode if model.tokenizer is not None else None
    reasons: list[str | None] = [None] * len(rows)
    pad = model.bos_id or 0
    for _ in range(max_new_tokens):
        live = [i for i, r in enumerate(reasons) if r is None]
        if not live:
            break
        batch = pad_rows([rows[i] for i in live], pad)
        # rows of one length: logits at the last position only ([rows, 1, d_vocab], not [rows, pos,
        # d_vocab]: 262k-token vocabularies); else every position, each row read at its own end
        even = len({len(rows[i]) for i in live}) == 1
        logits, _ = runner.run(batch.tokens, edits=plan, last_only=even)
        ends = torch.tensor([len(rows[i]) - 1 for i in live])
        last = logits[:, -1] if even else logits[torch.arange(len(live)), ends.to(logits.device)]
        nxt = _next(last, temperature, top_k, top_p, [gens[i] for i in live]).tolist()
        for i, t in zip(live, nxt):
            rows[i].append(int(t))
            if t in stop_ids:
                reasons[i] = "stop_token"
            elif stop_strings:
                text = decode(rows[i][lengths[i]:])
                if any(s in text for s in stop_strings):
                    reasons[i] = "stop_string"
    completions = None
    if decode is not None:
        completions = []
        for i, r in enumerate(rows):
            new = r[lengths[i]:]
            text = decode(new[:-1] if reasons[i] == "stop_token" else new)
            if reasons[i] == "stop_string":
                text = text[:min(text.find(s) for s in stop_strings if s in text)]
            completions.append(text)
    out = pad_rows(rows, pad)
    return Generation(
        prompts=prompts if prompts is not None and all(isinstance(p, str) for p in prompts) else None,
        completions=completions, tokens=out.tokens, mask=out.mask, prompt_lengths=list(lengths),
        stop_reasons=[r or "max_new_tokens" for r in reasons],
    )


@with_analysis_threads
def generate(model: Any, prompt: Any, **kw: Any) -> str | list[str]:
    """Generate text: ``generate_tokens(model, prompt, **kw)`` and return prompt plus
    completion, a str for a str prompt and a list of str for a list (for token-id prompts,
    the decoded rows). The tokens, stop reasons and a frame: ``generate_tokens``."""
    g = generate_tokens(model, prompt, **kw)
    if g.texts is not None:
        return g.texts[0] if isinstance(prompt, str) else g.texts
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer, so there is no text; call interp.generate_tokens and "
                         "read .tokens")
    return [model.tokenizer.decode(r[m].tolist()) for r, m in zip(g.tokens, g.mask)]

