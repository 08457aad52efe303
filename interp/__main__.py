"""``python -m interp ...`` and ``torchrun --nproc-per-node N -m interp stats ...``: the ``interp`` command."""

import sys

from interp.cli import main

if __name__ == "__main__":
    sys.exit(main())
