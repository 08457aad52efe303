"""What is loaded must be what is in the checkpoint: checks on a checkpoint directory that
run before any weight is allocated.

- ``read_config``: ``config.json`` is a JSON object whose sizes are positive ints.
- ``weight_shapes``: every tensor's shape from the safetensors headers (no tensor is read).
- ``check_config_against_weights``: the config's layer count equals the layers the weights
  hold (more weights than the config uses are refused, like missing ones), and the model the
  config describes, built on the ``meta`` device (no memory), has the weights' shapes. A
  config declaring a million layers or a vocabulary of 10^9 fails here, in milliseconds.
- ``check_tokenizer_files`` / ``check_tokenizer``: a directory without tokenizer files is
  refused (transformers would build a tokenizer that maps every text to one token), and so
  is a tokenizer that cannot be read or that maps a line of code to a single id.

Every failure is a ``CheckpointError`` (a ``ValueError``) naming the file, the value and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interp.errors import CheckpointError

#: Config fields that are sizes (whichever a family uses): when present and not null, each
#: must be a positive int.
SIZE_FIELDS = (
    "num_hidden_layers", "n_layer", "n_layers", "hidden_size", "n_embd", "d_model", "num_attention_heads",
    "n_head", "n_heads", "num_key_value_heads", "intermediate_size", "n_inner", "ffn_dim", "vocab_size",
    "max_position_embeddings", "n_positions", "n_ctx", "head_dim",
)
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers")
#: Files any one of which is a tokenizer transformers can read.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.tiktoken", "vocab.model")
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
PROBE_TEXT = "def add(a, b):\n    return a + b\n"


def check_regular_files(path: Path) -> None:
    """Every file of checkpoint directory ``path`` is a regular file (links to one are fine):
    a FIFO, socket or device where a weight, config or tokenizer file should be would block or
    stream forever when opened, so it is refused before anything is opened."""
    import stat

    for entry in sorted(path.iterdir()):
        try:
            mode = entry.stat().st_mode  # follows links: the HF cache links to blobs
        except OSError as e:
            raise CheckpointError(f"{entry} cannot be read ({e}); repair the checkpoint or remove the file") from e
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
            raise CheckpointError(f"{entry} is {kind}, not a regular file; reading it could block forever. Replace "
                                  "it with the real file (or remove it from the checkpoint directory)")


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of checkpoint directory ``path`` as a dict, its sizes checked; first,
    every file of the directory must be a regular one (``check_regular_files``)."""
    check_regular_files(path)
    cfg_file = path / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({e}); repair or re-save the checkpoint") from e
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file} cannot be read ({e}); repair or re-save the checkpoint") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(
            f"{cfg_file} holds a JSON {type(cfg).__name__}, not an object of settings; a Hugging Face "
            'config.json is an object such as {"model_type": "llama", ...}: re-save the checkpoint'
        )
    for name in SIZE_FIELDS:
        v = cfg.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise CheckpointError(f"{cfg_file} has {name}={v!r} ({type(v).__name__}); a size must be a positive "
                                  f"int: fix it in config.json (e.g. {name}: {int(v) if isinstance(v, str) and v.strip().isdigit() else 12})")
        if v < 1:
            raise CheckpointError(f"{cfg_file} has {name}={v}; a size must be a positive int: fix config.json")
    for name in ("architectures",):
        v = cfg.get(name)
        if v is not None and not (isinstance(v, list) and all(isinstance(a, str) for a in v)):
            raise CheckpointError(f"{cfg_file} has {name}={v!r}; it must be a list of class names such as "
                                  '["LlamaForCausalLM"]: fix config.json')
    if "model_type" in cfg and not isinstance(cfg["model_type"], str):
        raise CheckpointError(f"{cfg_file} has model_type={cfg['model_type']!r}; it must be a string such as "
                              "'llama': fix config.json")
    return cfg


def weight_shapes(shards: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape over all safetensors shards, read from the headers only."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for shard in shards:
        try:
            with safe_open(str(shard), "pt") as f:
                for k in f.keys():
                    shapes[k] = tuple(f.get_slice(k).get_shape())
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(
                f"{shard} is not a readable safetensors file ({e}); re-download or re-save it"
            ) from e
    return shapes


def _layers_in(shapes: Mapping[str, Any]) -> set[int]:
    return {int(m.group(1)) for k in shapes for m in [_LAYER_INDEX.search(k)] if m}


def check_config_against_weights(path: Path, cfg: dict[str, Any], shapes: Mapping[str, tuple[int, ...]],
                                 *, trust_remote_code: bool = False) -> None:
    """Refuse a config that does not describe these weights, before anything is allocated."""
    where = f"name_or_path={str(path)!r}"
    declared = next((cfg[f] for f in LAYER_FIELDS if isinstance(cfg.get(f), int)), None)
    held = _layers_in(shapes)
    if declared is not None and held:
        n_held = max(held) + 1
        if declared > n_held:
            raise CheckpointError(
                f"{where}: config.json declares {declared:,} layers but the weights hold {n_held}; the other "
                f"{declared - n_held:,} would be random. Fix the layer count in config.json (to {n_held}) or "
                "re-save the checkpoint"
            )
        if declared < n_held:
            raise CheckpointError(
                f"{where}: config.json declares {declared} layer(s) but the weights hold {n_held}; the weights of "
                f"layers {declared}..{n_held - 1} would be silently ignored. Fix the layer count in config.json "
                f"(to {n_held}) or re-save the checkpoint"
            )
    expected = _meta_shapes(path, cfg, trust_remote_code)
    if expected is None:
        return
    want, prefix = expected
    got = _align(shapes, want, prefix)
    wrong = [(k, want[k], got[k]) for k in want if k in got and tuple(want[k]) != tuple(got[k])]
    if wrong:
        shown = "; ".join(f"{k}: config {list(a)}, weights {list(b)}" for k, a, b in wrong[:3])
        raise CheckpointError(
            f"{where}: config.json describes other shapes than the weights hold ({len(wrong)} tensor(s): {shown}"
            f"{'; ...' if len(wrong) > 3 else ''}); fix the sizes in config.json or re-save the checkpoint"
        )


def _meta_shapes(path: Path, cfg: dict[str, Any], trust_remote_code: bool):
    """``({name: shape}, base_model_prefix)`` of the model the config describes, built on the
    meta device; None where transformers cannot tell (remote code, an unknown model type)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.get("auto_map"):
        return None
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, KeyError) as e:  # unknown model_type
        if "model_type" in str(e) or "Unrecognized" in str(e):
            return None
        raise CheckpointError(f"{path / 'config.json'} is not a valid config ({str(e)[:300]}); fix config.json") from e
    except Exception as e:  # transformers' validation raises many error types
        raise CheckpointError(f"{path / 'config.json'} is not a valid config ({type(e).__name__}: "
                              f"{str(e)[:300]}); fix config.json") from e
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            return None  # not a causal LM: refused by the caller with its own message
        raise CheckpointError(f"{path / 'config.json'} describes a model transformers cannot build "
                              f"({str(e)[:300]}); fix config.json") from e
    except Exception as e:
        raise CheckpointError(f"{path / 'config.json'} describes a model transformers cannot build "
                              f"({type(e).__name__}: {str(e)[:300]}); fix config.json") from e
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, getattr(model, "base_model_prefix", "")


def _align(shapes: Mapping[str, tuple[int, ...]], want: Mapping[str, Any], prefix: str) -> dict[str, tuple]:
    """The checkpoint's names as the model names them (with or without the base prefix)."""
    if not prefix or any(k in want for k in shapes):
        return dict(shapes)
    p = prefix + "."
    added = {p + k: v for k, v in shapes.items()}
    if any(k in want for k in added):
        return added
    return {k[len(p):]: v for k, v in shapes.items() if k.startswith(p)}


def check_tokenizer_files(path: Path) -> None:
    """A checkpoint directory loaded without ``tokenizer=`` must hold its tokenizer."""
    if any((path / f).is_file() for f in TOKENIZER_FILES) or list(path.glob("*.tiktoken")):
        return
    raise CheckpointError(
        f"name_or_path={str(path)!r} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...); without "
        "them transformers builds an empty tokenizer that maps every text to one token. Save the tokenizer "
        "beside the weights (tokenizer.save_pretrained(dir)), or pass tokenizer=AutoTokenizer.from_pretrained(...)"
    )


def check_tokenizer(tokenizer: Any, d_vocab: int, source: str) -> None:
    """The tokenizer a model was loaded with must split text into ids of this model."""
    if tokenizer is None:
        return
    try:
        ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    except Exception as e:  # a broken tokenizer can raise anything
        raise CheckpointError(f"the tokenizer of {source!r} cannot encode text ({type(e).__name__}: {e}); "
                              "re-save the tokenizer or pass tokenizer=...") from e
    if len(set(ids)) < 2:
        raise CheckpointError(
            f"the tokenizer of {source!r} maps {PROBE_TEXT!r} to {len(ids)} token(s) {ids}: it has no vocabulary, "
            "so every analysis would run on one token. Save the model's own tokenizer beside its weights, or "
            "pass tokenizer=..."
        )
    if max(ids) >= d_vocab:
        raise CheckpointError(
            f"the tokenizer of {source!r} gives token id {max(ids)} but the model's vocabulary is 0..{d_vocab - 1}; "
            "it is another model's tokenizer: pass this model's own (tokenizer=...)"
        )


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """The directory's own tokenizer, read as TransformerLens reads it (``add_bos_token=True``,
    fast where available); a missing or unreadable one is a ``CheckpointError``."""
    from transformer_lens.utilities.hf_utils import autotokenizer_with_special_token_compat
    from transformers import AutoTokenizer

    check_tokenizer_files(path)
    try:
        try:
            return autotokenizer_with_special_token_compat(
                str(path), auto_tokenizer=AutoTokenizer, add_bos_token=True, use_fast=True,
                trust_remote_code=trust_remote_code,
            )
        except ValueError:
            return AutoTokenizer.from_pretrained(str(path), use_fast=True, trust_remote_code=trust_remote_code)
    except Exception as e:  # tokenizers and transformers raise many error types for a bad file
        raise CheckpointError(
            f"name_or_path={str(path)!r}: its tokenizer files cannot be read ({type(e).__name__}: {str(e)[:200]}); "
            "re-save the tokenizer (tokenizer.save_pretrained(dir)) or pass tokenizer=..."
        ) from e
