#!/usr/bin/env python
"""Compare two param groupings parameter by parameter, before anything trains.

The code is `pgtrain/tools/diff_param_groups.py`; installed, it is ``pgtrain diff``.
"""

import sys

from pgtrain.tools import diff_param_groups as _tool
from pgtrain.tools.diff_param_groups import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.diff_param_groups import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.diff_param_groups":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
