"""The one progress bar interp uses: tqdm's notebook widget in a Jupyter kernel that has
ipywidgets, tqdm's text bar everywhere else.

``tqdm.auto`` makes the same choice, but in a kernel without ipywidgets it first warns
"IProgress not found. Please update jupyter and ipywidgets", and it does so on import,
from whichever library imports it first (transformers and huggingface_hub do, while
``import interp`` runs). ``interp/__init__.py`` imports this module before anything else,
so that the choice is made here once: where ipywidgets is missing, ``tqdm.autonotebook``
is imported with that one warning silenced (it then falls back to the text bar, for every
library), and interp uses ``tqdm.std``. Install ipywidgets (``pip install ipywidgets``, in
the ``notebook`` and ``dev`` extras) for widget bars.

Examples:
    >>> from interp._progress import tqdm
    >>> sum(1 for _ in tqdm(range(3), disable=True))
    3
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["tqdm"]


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython kernel) process, the only place tqdm.auto draws widgets."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # an IPython without a usable shell: not a kernel
        return False


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401  (what tqdm's notebook bar draws with)
    except Exception:  # ImportError, or a broken install: the text bar will do
        return False
    return True


if not _in_kernel():
    from tqdm.std import tqdm  # what tqdm.auto picks outside a kernel, without importing IPython
elif _has_ipywidgets():
    from tqdm.auto import tqdm
else:
    if "tqdm.autonotebook" not in sys.modules:
        from tqdm.std import TqdmWarning

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
            import tqdm.autonotebook  # noqa: F401  (decided once, quietly, for every library)
    from tqdm.std import tqdm
