"""``interp.load``: build a ``Model`` from the default model, a directory, a hub name, or a
model already in memory. Offline first: only a hub name may touch the network."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import socket
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from interp._checks import check_bool, check_choice, check_device, check_int
from interp._quiet import quietly
from interp.capture import calibration_tolerance
from interp.checkpoint_checks import (
    check_config_against_weights,
    check_tokenizer,
    load_tokenizer,
    read_config,
    weight_shapes,
)
from interp.config import enabled_cap
from interp.errors import CheckpointError, InterpError, ModelNotFoundError, UnsafeCheckpointError
from interp.gguf import NAMED_MODELS, converted_checkpoint, find_gguf, named_checkpoint, named_model_file
from interp.model import PROCESSING, Model
from interp.processed_cache import reuse_processing

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def logit_tolerance(model_dtype: torch.dtype, reference_dtype: torch.dtype, n_layers: int) -> float:
    """How far a loaded model's logits may be from the checkpoint's own on a probe input, as the
    RMS of the difference over the RMS of the logits (both centred over the vocabulary): the
    fast path's calibration budget (``interp.capture.calibration_tolerance``: 64 roundings per
    layer the error passes through) at the coarsest of the two dtypes and float32, since the two
    forwards are one function rounded differently and TransformerLens folds the weights in
    float32 (a float64 model's logits differ from its float64 checkpoint's by 6e-8). Measured: 3e-7 of 2.3e-5 on tiny fp32 models, 2.3e-6 of
    2.4e-4 on SmolLM2-135M; a conversion that changes the function (TransformerLens 4.3's
    processing of a square LayerNorm MLP) errs by the order of the logits."""
    coarse = max(model_dtype, reference_dtype, torch.float32, key=lambda d: torch.finfo(d).eps)
    return calibration_tolerance(coarse, n_layers)


def _keeps_global_rng(fn: Any) -> Any:
    """Run ``fn`` inside ``torch.random.fork_rng``: building a model draws random numbers (its
    initial weights), and the caller's seeded sequence must not move because of it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return fn(*args, **kwargs)

    return wrapper


@_keeps_global_rng
@quietly
def load(
    name_or_path: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    processing: str = "compat",
    tokenizer: Any = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device_map: Any = None,
    n_devices: int | None = None,
    max_memory: dict | None = None,
    fast: bool = True,
    cache_dir: str | Path | None = None,
) -> Model:
    """Load a model for analysis.

    Args:
        name_or_path: None for the embedded default model (offline); a named real model
            (``"smollm2-135m"``, ``"gemma-3-270m"``, from an installed package:
            ``interp.gguf.NAMED_MODELS``); a
            local directory with a Hugging Face checkpoint (offline); a ``.gguf`` file, or a
            directory holding one (dequantized once and cached, see ``cache_dir``); a hub name
            (needs the network or the local cache); or a Hugging Face model or
            TransformerLens bridge already in memory (it is copied, never modified).
        device: "cpu", "cuda", ... (default: cuda when available, else cpu).
        dtype: torch.float32 (default), float16, bfloat16 or float64.
        processing: "compat" (default): TransformerLens compatibility processing, folded
            LayerNorm and centred writing weights, the convention of published numbers. The
            unembedding is centred too, except for a model whose logits are soft-capped
            (Gemma 2, ``cfg.logit_softcap``): ``cap * tanh(z / cap)`` is not invariant to a
            constant added to every logit, so its ``W_U`` is kept as it is; direct logit
            attribution rows then depend on that constant (a component that raises every
            logit alike gets a non-zero row), and a logit difference removes it.
            "raw": the checkpoint's own weights.
        tokenizer: a tokenizer for an in-memory model (else it is found from the model's path).
        allow_pickle: permit ``.bin``/``.pt`` checkpoints, which run pickle. Default False.
        trust_remote_code: permit a checkpoint's own Python code. Default False.
        device_map / n_devices / max_memory: Hugging Face accelerate placement across several
            devices, passed through to TransformerLens.
        fast: keep an unprocessed copy of the checkpoint to record writes from its own forward
            (SDPA attention, about the cost of a plain forward; twice the weights' memory).
            The copy is checked against TransformerLens on the first batch. False: record
            through the bridge only.
        cache_dir: where converted GGUF checkpoints are kept (default ``$INTERP_CACHE_DIR``,
            else ``$XDG_CACHE_HOME/interp``, else ``~/.cache/interp``).
    Raises:
        ModelNotFoundError: a missing directory, or a hub name with no network and no cache.
        UnsafeCheckpointError: a pickle-only checkpoint without ``allow_pickle=True``, or one
            that runs its own code without ``trust_remote_code=True``.
        CheckpointError: a directory whose files do not describe one model, checked before any
            weight is allocated: config.json not an object or with invalid sizes; a layer count
            or sizes other than the weights hold (unused weights are refused like missing ones);
            no tokenizer files (and no ``tokenizer=``), or unreadable ones.
        ValueError: a checkpoint that is not a causal language model, is corrupted, lacks
            weights or has weights of the wrong shape; a device that does not exist; a model
            whose converted logits differ from the checkpoint's own on a probe input (beyond
            ``LOGIT_TOLERANCE``; e.g. TransformerLens's compatibility processing of LayerNorm
            models with ``d_mlp == d_model``: use ``processing="raw"``).
    Examples:
        >>> model = interp.load()
    """
    check_choice("processing", processing, PROCESSING)
    check_device("device", device)
    for flag, value in (("allow_pickle", allow_pickle), ("trust_remote_code", trust_remote_code), ("fast", fast)):
        check_bool(flag, value)
    n_devices = check_int("n_devices", n_devices, minimum=1, allow_none=True)
    given_dtype = _dtype(dtype) if dtype is not None else None
    dtype = given_dtype or torch.float32
    if device is None and device_map is None and n_devices is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sharded = device_map is not None or n_devices is not None or max_memory is not None
    from transformer_lens.model_bridge import TransformerBridge

    if name_or_path is None:
        from interp.models import DEFAULT_MODEL_DIR

        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise ModelNotFoundError(
                f"the embedded default model is missing from {DEFAULT_MODEL_DIR}; reinstall interp "
                "or rebuild it with `python -m interp.models.train --out <dir>`"
            )
        name_or_path = DEFAULT_MODEL_DIR
    if isinstance(name_or_path, TransformerBridge):
        return _from_bridge(name_or_path, processing)
    if isinstance(name_or_path, torch.nn.Module):
        if getattr(name_or_path, "config", None) is None:
            raise TypeError(
                f"name_or_path is a {type(name_or_path).__name__} without a Hugging Face config; pass "
                "a transformers causal LM (e.g. AutoModelForCausalLM.from_pretrained(...))"
            )
        _check_causal_lm(type(name_or_path).__name__, "name_or_path")
        hf = copy.deepcopy(name_or_path)
        if given_dtype is not None:
            hf = hf.to(given_dtype)
        name = hf.config._name_or_path or type(hf).__name__
        return _from_hf(hf, f"in-memory/{name}", name, tokenizer, processing, device, fast)
    if isinstance(name_or_path, (str, Path)):
        if not str(name_or_path).strip():
            raise ValueError(f"name_or_path={name_or_path!r} is empty; pass a checkpoint directory, a hub "
                             "name, or None for the embedded default model")
        path = Path(name_or_path).expanduser()
        source: dict[str, Any] | None = None
        display = path.name
        named = str(name_or_path).strip().lower()
        if named in NAMED_MODELS and not path.exists() and NAMED_MODELS[named].chunks:
            path, source = named_checkpoint(named, cache_dir=cache_dir)
            display = named
        else:
            gguf_file, spec = (named_model_file(named) if named in NAMED_MODELS and not path.exists()
                               else (find_gguf(path), None))
            if gguf_file is not None:
                path, source = converted_checkpoint(gguf_file, cache_dir=cache_dir, named=spec)
                display = spec.name if spec else gguf_file.stem
        if path.is_dir():
            _check_dir(path, allow_pickle, trust_remote_code)
            ckpt = str(path.resolve())
            if sharded:
                if tokenizer is None:
                    tokenizer = load_tokenizer(path, trust_remote_code)
                bridge = TransformerBridge.boot_transformers(
                    ckpt, dtype=dtype, tokenizer=tokenizer, trust_remote_code=trust_remote_code,
                    device_map=device_map, n_devices=n_devices, max_memory=max_memory,
                )
                return _finish(bridge, processing, display, None, source)
            with _beside(load_tokenizer, path, trust_remote_code, given=tokenizer) as tokenizer:
                hf = _from_pretrained(ckpt, dtype, allow_pickle, trust_remote_code, local_only=True)
                again = functools.partial(_from_pretrained, ckpt, dtype, allow_pickle, trust_remote_code,
                                          local_only=True)
                return _from_hf(hf, ckpt, display, tokenizer, processing, device, fast, source, copy_of=again,
                                processed_dir=path if source is not None else None)
        if _looks_like_path(str(name_or_path)):
            raise ModelNotFoundError(
                f"name_or_path={str(name_or_path)!r} is not a directory; pass a directory holding "
                "config.json and *.safetensors, or a hub name such as 'gpt2'"
            )
        _check_hub(str(name_or_path))
        if sharded:
            bridge = TransformerBridge.boot_transformers(
                str(name_or_path), dtype=dtype, tokenizer=tokenizer, trust_remote_code=trust_remote_code,
                device_map=device_map, n_devices=n_devices, max_memory=max_memory,
            )
            return _finish(bridge, processing, str(name_or_path), None)
        hf = _from_pretrained(str(name_or_path), dtype, allow_pickle, trust_remote_code, local_only=False)
        return _from_hf(hf, str(name_or_path), str(name_or_path), tokenizer, processing, device, fast)
    raise TypeError(
        f"name_or_path must be None, a path, a hub name, a Hugging Face model or a "
        f"TransformerBridge; got {type(name_or_path).__name__}"
    )


def _dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype={dtype} is not supported; use torch.float32, float16, bfloat16 or float64")
    return dtype


def _looks_like_path(s: str) -> bool:
    """Hub names look like ``gpt2`` or ``org/name``; anything else is meant as a path."""
    return s.startswith((".", "/", "~", "\\")) or Path(s).exists() or s.count("/") > 1


def _check_causal_lm(arch: str, what: str) -> None:
    if not arch.endswith(CAUSAL_LM_SUFFIXES):
        raise ValueError(
            f"{what} holds a {arch}, not a causal language model; interp needs a *ForCausalLM / "
            "*LMHeadModel (e.g. AutoModelForCausalLM.from_pretrained(...))"
        )


def _check_dir(path: Path, allow_pickle: bool, trust_remote_code: bool = False) -> None:
    """Refuse what would silently misbehave: no config, not a causal LM, remote code or pickle
    without opt-in, corruption."""
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise ModelNotFoundError(
            f"name_or_path={str(path)!r} has no config.json; pass a Hugging Face checkpoint directory"
        )
    cfg = read_config(path)
    archs = cfg.get("architectures") or []
    if archs and not any(a.endswith(CAUSAL_LM_SUFFIXES) for a in archs):
        _check_causal_lm(archs[0], f"name_or_path={str(path)!r}")
    if cfg.get("auto_map") and not trust_remote_code:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        if cfg.get("model_type") not in CONFIG_MAPPING:
            raise UnsafeCheckpointError(
                f"name_or_path={str(path)!r} has model_type={cfg.get('model_type')!r}, which runs the "
                "checkpoint's own Python code (config.json auto_map); read that code, then pass "
                "trust_remote_code=True if you trust it"
            )
    shards = sorted(path.glob("*.safetensors"))
    pickles = [p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if not shards and pickles and not allow_pickle:
        raise UnsafeCheckpointError(
            f"name_or_path={str(path)!r} holds only pickle weights ({pickles[0].name}), which can run "
            "arbitrary code; convert them to safetensors, or pass allow_pickle=True if you trust them"
        )
    if not shards and not pickles:
        raise ModelNotFoundError(f"name_or_path={str(path)!r} holds no weights (*.safetensors)")
    if shards:  # before anything is allocated: the config must describe these weights
        check_config_against_weights(path, cfg, weight_shapes(shards), trust_remote_code=trust_remote_code)


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _check_hub(name: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if not cached and not _hub_reachable():
        raise ModelNotFoundError(
            f"name_or_path={name!r} is not in the local Hugging Face cache and the hub cannot be "
            "reached; pass a local checkpoint directory instead, e.g. interp.load('path/to/model'), "
            "or interp.load() for the embedded default model"
        )


def _from_pretrained(source: str, dtype, allow_pickle: bool, trust_remote_code: bool, *, local_only: bool):
    from transformers import AutoModelForCausalLM

    try:
        hf, info = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, local_files_only=local_only, use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code, output_loading_info=True,
        )
    except RuntimeError as e:  # transformers reports mismatched shapes as a RuntimeError
        if "mismatch" not in str(e):
            raise
        raise CheckpointError(
            f"name_or_path={source!r}: weights in the checkpoint do not match the shapes its config.json "
            f"describes ({str(e)[:200]}); re-save the checkpoint or fix the config"
        ) from e
    except (InterpError, OSError, ImportError):
        raise
    except (AttributeError, TypeError, KeyError, ValueError) as e:  # a config transformers cannot use
        raise CheckpointError(
            f"name_or_path={source!r}: transformers cannot build the model its config.json describes "
            f"({type(e).__name__}: {str(e)[:200]}); fix or re-save the config"
        ) from e
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:
        raise CheckpointError(
            f"name_or_path={source!r} holds {len(unused)} weight(s) the model its config.json describes does not "
            f"use ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}); they would be silently ignored. "
            "Check that config.json matches the weights (e.g. its layer count), or re-save the checkpoint"
        )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(
            f"name_or_path={source!r} lacks {len(missing)} weight(s) its architecture needs "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); they would be random. "
            "Re-save the checkpoint, or check that config.json matches the weights"
        )
    return hf.eval()


def _from_hf(hf: Any, source: str, name: str, tokenizer: Any, processing: str, device: Any, fast: bool,
             origin: dict[str, Any] | None = None, copy_of: Any = None, processed_dir: Path | None = None) -> Model:
    """Bridge one copy of ``hf``; keep the other, untouched, for the fast capture path.
    ``copy_of()`` builds that copy (a second load of a local safetensors checkpoint is
    memory-mapped, several times faster than ``copy.deepcopy``). ``processed_dir``: a converted
    checkpoint's cache entry, where TransformerLens's processing is kept
    (``interp.processed_cache``)."""
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    hf = hf.to(device).eval()  # a copy: the caller's model keeps its mode
    probe, want = _own_logits(hf)  # before bridging: processing edits the weights in place
    raw = None
    if fast:
        raw = copy_of().to(device).eval() if copy_of is not None else copy.deepcopy(hf)
    if isinstance(tokenizer, Future):
        tokenizer = tokenizer.result()
    bridge = TransformerBridge.boot_transformers(source, hf_model=hf, tokenizer=tokenizer, device=device)
    with reuse_processing(processed_dir if str(device) == "cpu" else None):
        model = _finish(bridge, processing, name, raw, origin)
    check_tokenizer(model.tokenizer, model.cfg.d_vocab, name)
    _check_logits(model, probe, want)
    return model


@contextlib.contextmanager
def _beside(read: Any, *args: Any, given: Any = None) -> Iterator[Any]:
    """``given`` when not None, else a ``Future`` of ``read(*args)`` run on a second thread while
    the caller loads the weights: a large vocabulary's tokenizer is seconds of JSON parsing
    (Gemma 3's 262k entries: 2-3 s), and the weights' loading and the checkpoint's forward run
    in torch, outside the interpreter lock. The thread is joined when the block exits."""
    if given is not None:
        yield given
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="interp-tokenizer") as pool:
        future = pool.submit(read, *args)
        try:
            yield future
        except BaseException:
            future.cancel()
            raise
        future.result()  # a tokenizer error surfaces even when the block did not ask for it


def _own_logits(hf: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A few token ids spread over the vocabulary, and the checkpoint's own logits for them."""
    cfg = hf.config
    n_ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 8
    vocab = hf.get_input_embeddings().num_embeddings
    probe = torch.linspace(0, vocab - 1, min(8, n_ctx)).long()[None]
    with torch.no_grad():
        return probe, hf(probe.to(next(hf.parameters()).device)).logits.detach()


def _check_logits(model: Model, probe: torch.Tensor, want: torch.Tensor) -> None:
    """The model TransformerLens built must compute the checkpoint's logits (up to a constant
    per position, which compatibility processing's centred unembedding removes; a soft-capped
    model's unembedding is not centred, and its logits are compared as they are)."""
    if not torch.isfinite(want).all():
        raise ValueError(
            f"model={model.cfg.name!r}: the checkpoint's own forward pass gives NaN or inf logits; its "
            "weights hold NaN or inf" + (" or its dtype overflows (load it with dtype=torch.float32)"
                                          if model.cfg.dtype in (torch.float16, torch.bfloat16) else
                                          ": check the checkpoint (or the weight surgery)")
        )
    tol = logit_tolerance(model.cfg.dtype, want.dtype, model.cfg.n_layers)
    got = model.logits(probe).double()
    want = want.double().to(got.device)
    if model.cfg.logit_softcap is None:
        got, want = got - got.mean(-1, keepdim=True), want - want.mean(-1, keepdim=True)
    err = float((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt().clamp_min(1e-30))
    if not err <= tol:
        low = model.cfg.dtype in (torch.float16, torch.bfloat16)
        raise ValueError(
            f"processing={model.cfg.processing!r}: the model TransformerLens built from this checkpoint "
            f"computes other logits than the checkpoint itself (RMS difference {err:.1e} of the logits' RMS, "
            f"tolerance {tol:.0e}), so every analysis would describe a different model; load it with "
            + ("dtype=torch.float32, or with " if low else "")
            + ("processing='raw'" if model.cfg.processing == "compat" else "another interp or TransformerLens version")
        )


def _finish(bridge: Any, processing: str, name: str, raw_hf: Any, origin: dict[str, Any] | None = None) -> Model:
    # A soft-capped model's unembedding is not centred (the cap is not shift-invariant): asked
    # for here rather than left to TransformerLens, which would log the refusal as a warning.
    capped = enabled_cap(getattr(bridge.cfg, "output_logits_soft_cap", None)) is not None
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=processing == "raw",
                                     center_unembed=not capped)
    return Model(bridge, processing=processing, name=name, raw_hf=raw_hf, source=origin)


def _from_bridge(bridge: Any, processing: str) -> Model:
    """Wrap a caller's bridge. One already in compatibility mode is used as it is; any other
    is copied first, so the caller's object is never changed."""
    if getattr(bridge, "compatibility_mode", False):
        used = "compat" if getattr(bridge, "_weights_processed", False) else "raw"
        if used != processing:
            log.warning("bridge is already in %r processing; using that, not %r", used, processing)
        return Model(bridge, processing=used, name=str(bridge.cfg.model_name))
    return _finish(copy.deepcopy(bridge), processing, str(bridge.cfg.model_name), None)
