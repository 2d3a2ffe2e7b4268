"""Runs a tool's command line many times as a user would, paying its imports once.

`run_batch("tools/train_net.py", [[args...], ...])` starts one Python process that imports the
tool, then forks one child per command line: each child gets the arguments in ``sys.argv``, its
own stdout and stderr (the file descriptors, so log handlers are caught too) and exits with the
tool's own status, exactly as a fresh ``python tools/train_net.py ...`` would, minus the
seconds of importing torch and torchvision each time. An uncaught exception prints its traceback
and exits 1, as the interpreter does.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUNNER = r"""
import json, os, runpy, sys, tempfile, traceback
script, cases_file, out_dir = sys.argv[1:4]
module = runpy.run_path(script, run_name="pgtrain_cli_batch")  # imports, does not run cli()
cases = json.load(open(cases_file))
# Load each config once here, so the children share the imports its modules make (torchvision).
for config in {a[a.index("--config") + 1] for a in cases if "--config" in a[:-1]}:
    try:
        from pgtrain.config import LazyConfig
        LazyConfig.load(config)
    except Exception:
        pass  # a case about a broken config: its child reports it
for i, argv in enumerate(cases):
    out = os.open(os.path.join(out_dir, f"{i}.out"), os.O_WRONLY | os.O_CREAT)
    err = os.open(os.path.join(out_dir, f"{i}.err"), os.O_WRONLY | os.O_CREAT)
    pid = os.fork()
    if pid == 0:
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.argv = [script, *argv]
        code = 0
        try:
            module["cli"]()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int | None):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(out)
    os.close(err)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    open(os.path.join(out_dir, f"{i}.code"), "w").write(str(code))
"""


@dataclass
class Result:
    """One command line's outcome, as `subprocess.run` would report it."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_batch(script: str, cases: list[list[str]], tmp_dir, timeout: float = 900) -> list[Result]:
    """Runs ``python <script> <args>`` for each argument list in `cases`; returns the results in
    order. `script` is relative to the repo root, which is the working directory."""
    tmp_dir = str(tmp_dir)
    cases_file = os.path.join(tmp_dir, "cases.json")
    with open(cases_file, "w") as f:
        json.dump([[str(a) for a in argv] for argv in cases], f)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _RUNNER, os.path.join(ROOT, script), cases_file, tmp_dir]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = []
    for i, argv in enumerate(cases):

        def read(ext, i=i):
            with open(os.path.join(tmp_dir, f"{i}.{ext}")) as f:
                return f.read()

        results.append(Result(list(argv), int(read("code")), read("out"), read("err")))
    return results
