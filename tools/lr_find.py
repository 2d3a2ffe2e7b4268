#!/usr/bin/env python
"""LR range test that keeps the param groups' ratios: one factor swept over every group at once.

The code is `pgtrain/tools/lr_find.py`; installed, it is ``pgtrain lr-find``.
"""

import sys

from pgtrain.tools import lr_find as _tool
from pgtrain.tools.lr_find import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.lr_find import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.lr_find":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
