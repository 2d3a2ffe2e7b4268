"""What the project tests share: running a tool the way a user does."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def run_tool():
    """Runs ``tools/<name> *args`` from the repo root; fails the test on a non-zero exit."""

    def run(name, *args):
        cmd = [sys.executable, os.path.join(ROOT, "tools", name), *args]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    return run
