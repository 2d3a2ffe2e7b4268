#!/usr/bin/env python
"""Plot every param group's LR over the whole schedule, without training.

The code is `pgtrain/tools/plot_lr.py`; installed, it is ``pgtrain plot-lr``.
"""

import sys

from pgtrain.tools import plot_lr as _tool
from pgtrain.tools.plot_lr import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.plot_lr import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.plot_lr":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
