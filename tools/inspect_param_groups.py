#!/usr/bin/env python
"""Show the param groups a config builds, on the CPU, without training.

The code is `pgtrain/tools/inspect_param_groups.py`; installed, it is ``pgtrain inspect``.
"""

import sys

from pgtrain.tools import inspect_param_groups as _tool
from pgtrain.tools.inspect_param_groups import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.inspect_param_groups import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.inspect_param_groups":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
