#!/usr/bin/env python
"""Submit a training run to Slurm (or run it with submitit's local executor) with submitit.

The code is `pgtrain/tools/submit.py`; installed, it is ``pgtrain submit``.
"""

import sys

from pgtrain.tools import submit as _tool
from pgtrain.tools.submit import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.submit import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.submit":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
