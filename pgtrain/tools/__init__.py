"""The command-line tools, one module each: ``pgtrain <command>`` (see `pgtrain.cli`) and
``python tools/<name>.py`` in a checkout run the same `cli()`."""
