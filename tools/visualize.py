#!/usr/bin/env python
"""Save a PNG of a trained detector's predicted masks over validation images.

The code is `pgtrain/tools/visualize.py`; installed, it is ``pgtrain visualize``.
"""

import sys

from pgtrain.tools import visualize as _tool
from pgtrain.tools.visualize import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.visualize import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.visualize":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
