#!/usr/bin/env python
"""Run a trained detector on your own images: drawn predictions plus COCO-format results.

The code is `pgtrain/tools/predict.py`; installed, it is ``pgtrain predict``.
"""

import sys

from pgtrain.tools import predict as _tool
from pgtrain.tools.predict import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.predict import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.predict":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
