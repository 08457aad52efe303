"""The embedded default model and the code that trains it."""

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).parent / "stdlib_lm"
