"""The report's model card: the model's own card (MODEL_CARD.md or README.md next to its
weights), or one written from a GGUF checkpoint's recorded provenance, and its configuration."""

from __future__ import annotations

from typing import Any

import pandas as pd

from interp.report.document import Html, Section, Text


def model_card(ctx: Any, section: Section) -> None:
    """The model's own card (MODEL_CARD.md or README.md next to its weights), rendered."""
    from interp.report.html import markdown_html

    path = _card_path(ctx.model, ctx.settings.model)
    source = getattr(ctx.model, "source", None) or {}
    if path is None and source.get("gguf_file"):
        section.add(Html("Model card (from the GGUF file)", markdown_html(_gguf_card(ctx.model, source),
                                                                          heading_offset=2)))
    elif path is None:
        section.add(Text("This model has no model card (no MODEL_CARD.md or README.md next to its weights)."))
    else:
        section.add(Html(f"Model card ({path.name})", markdown_html(path.read_text(encoding="utf-8"), heading_offset=2)))
    cfg = ctx.model.cfg
    rows = {k: str(getattr(cfg, k)) for k in cfg.__dataclass_fields__}
    rows["model_id"] = ctx.model.model_id
    from interp.report.build import parameter_count

    rows["parameters"] = f"{parameter_count(ctx.model):,}"
    section.attempt("Configuration", lambda: pd.DataFrame(list(rows.items()), columns=["field", "value"]),
                    max_rows=len(rows))  # every field: the card is where a reader checks the config


_SHORT_DTYPE = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float64": "fp64"}


def _gguf_card(model: Any, source: dict[str, Any]) -> str:
    """A model card for a GGUF checkpoint, from what its conversion recorded
    (``Model.source``): provenance, licence, quantization, file and hash."""
    from pathlib import Path

    from interp.report.build import parameter_count

    cfg = model.cfg
    lines = [f"# {cfg.name}", ""]
    if source.get("provenance"):
        lines += [source["provenance"] + ".", ""]
    lines += [
        f"- **Weights**: {_SHORT_DTYPE.get(str(cfg.dtype), str(cfg.dtype))}, {parameter_count(model):,} parameters "
        f"(tied embeddings counted once), dequantized from GGUF **{source.get('quantization')}**: the numbers "
        "in this report are those of the quantized model, not of the original full-precision release.",
        f"- **Licence**: {source.get('licence') or 'not recorded (see the GGUF file metadata)'}.",
        f"- **File**: `{Path(str(source.get('gguf_file'))).name}`, SHA-256 `{str(source.get('sha256'))[:16]}…`"
        + (f", from the pip package `{source['package']}` {source.get('package_version') or ''}"
           if source.get("package") else "") + ".",
        f"- **Architecture**: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, d_mlp {cfg.d_mlp}, "
        f"vocabulary {cfg.d_vocab:,}, context {cfg.n_ctx:,}.",
    ]
    return "\n".join(lines) + "\n"


def _card_path(model: Any, name: str | None):
    from pathlib import Path

    from interp.models import DEFAULT_MODEL_DIR

    dirs = [DEFAULT_MODEL_DIR] if name is None else []
    if name is not None and Path(name).expanduser().is_dir():
        dirs.append(Path(name).expanduser())
    for d in dirs:
        for fname in ("MODEL_CARD.md", "README.md"):
            if (d / fname).is_file():
                return d / fname
    return None
