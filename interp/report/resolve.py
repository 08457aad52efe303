"""Find an analysis or plot function by name, wherever its module defines it.

The report and the CLI ask for ``"logit_lens"`` or ``"plots.probe_accuracy"`` rather than
importing modules directly, so a missing or renamed function becomes one clear message
("interp.logit_lens is not available: ...") in a degraded report section.
"""

from __future__ import annotations

import importlib
from typing import Any

ANALYSIS_MODULES = ("interp", "interp.decomposition", "interp.readout", "interp.logit_lens", "interp.probes",
                    "interp.memory", "interp.heads", "interp.patching", "interp.stats")
PLOT_MODULES = ("interp.plots", "interp.plots.decomposition", "interp.plots.probes", "interp.plots.memory",
                "interp.plots.heads", "interp.plots.patching", "interp.plots.stats")


class Missing(LookupError):
    """A function the report needs is not (yet) provided by interp."""


def find(name: str, *fallbacks: str) -> Any:
    """The function called ``name`` (``"plots.<name>"`` for figures), else the first fallback found.

    Raises:
        Missing: none of the names exists; the message lists where it looked and why.
    """
    why: list[str] = []
    for candidate in (name, *fallbacks):
        is_plot = candidate.startswith("plots.")
        attr = candidate.removeprefix("plots.")
        for module_name in PLOT_MODULES if is_plot else ANALYSIS_MODULES:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name != module_name:  # the module exists but one of its imports is missing
                    why.append(f"{module_name}: {e}")
                continue
            except ImportError as e:
                why.append(f"{module_name}: {e}")
                continue
            fn = getattr(module, attr, None)
            if fn is not None:
                return fn
    where = "interp.plots" if name.startswith("plots.") else "interp"
    detail = f" ({'; '.join(dict.fromkeys(why))})" if why else ""
    names = " / ".join(n.removeprefix("plots.") for n in (name, *fallbacks))
    raise Missing(f"{where}.{names} is not available{detail}")
