#!/usr/bin/env python
"""Convert a sharded checkpoint (an FSDP run's ``.dcp`` folder) into one ``.pth`` file.

The code is `pgtrain/tools/convert_checkpoint.py`; installed, it is ``pgtrain convert-checkpoint``.
"""

import sys

from pgtrain.tools import convert_checkpoint as _tool
from pgtrain.tools.convert_checkpoint import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.convert_checkpoint import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.convert_checkpoint":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
