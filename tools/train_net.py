#!/usr/bin/env python
"""Train (or evaluate) any pgtrain config.

The code is `pgtrain/tools/train_net.py`; installed, it is ``pgtrain train``.
"""

import sys

from pgtrain.tools import train_net as _tool
from pgtrain.tools.train_net import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.train_net import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.train_net":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
