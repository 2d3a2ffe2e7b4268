#!/usr/bin/env python
"""Check a COCO instances dataset whole, as training checks it, and print what was found.

The code is `pgtrain/tools/check_dataset.py`; installed, it is ``pgtrain check-dataset``.
"""

import sys

from pgtrain.tools import check_dataset as _tool
from pgtrain.tools.check_dataset import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.check_dataset import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.check_dataset":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
