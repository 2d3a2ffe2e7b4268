#!/usr/bin/env python
"""Print or write the settings reference (docs/settings.md) from the components' declarations.

The code is `pgtrain/tools/settings_reference.py`; installed, it is ``pgtrain settings``.
"""

import sys

from pgtrain.tools import settings_reference as _tool
from pgtrain.tools.settings_reference import *  # noqa: F403  (runpy users see the tool's names)
from pgtrain.tools.settings_reference import cli  # noqa: F401

if __name__ == "__main__":
    cli()
elif __name__ == "tools.settings_reference":
    sys.modules[__name__] = _tool  # `from tools import ...` gives the tool's own module
