"""docs/extending.md, run: its code blocks become the files of a project outside the repository,
and its commands train that project with the repository's tools, shrunk to a few iterations.

Every Python block of the guide (and of docs/design.md, if it has any) starts with a comment
naming its file (``# myproj/builders.py``); the blocks are written into a temporary folder that
stands for ``/elsewhere/``. The bash blocks' commands are taken from the page itself, so an edit
of the guide is tested.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch

from tests._cli_batch import ROOT, run_batch

GUIDE = "docs/extending.md"
PAGES_WITH_CODE = [GUIDE, "docs/design.md"]
FILE_COMMENT = re.compile(r"# (myproj/[\w/]+\.py)$")
ELSEWHERE = "/elsewhere/"


def code_blocks(page: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of `page`, in order."""
    with open(os.path.join(ROOT, page)) as f:
        return re.findall(r"^```(\w*)\n(.*?)^```", f.read(), flags=re.S | re.M)


def project_files() -> dict[str, str]:
    """The Python blocks of the pages, by the file their first line names."""
    files: dict[str, str] = {}
    for page in PAGES_WITH_CODE:
        if not os.path.exists(os.path.join(ROOT, page)):
            continue
        for lang, text in code_blocks(page):
            if lang != "python":
                continue
            first = text.splitlines()[0]
            found = FILE_COMMENT.match(first)
            assert found, f"{page}: a python block starts with {first!r}, not '# myproj/<file>.py'"
            assert found[1] not in files, f"{page}: two blocks are {found[1]}"
            files[found[1]] = text
    return files


def guide_commands() -> list[list[str]]:
    """The command lines of the guide's bash blocks, continuations joined."""
    commands = []
    for lang, text in code_blocks(GUIDE):
        if lang == "bash":
            for line in text.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    commands.append(shlex.split(line, comments=True))
    return commands


def write_project(folder) -> None:
    for path, text in project_files().items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def here(argv: list[str], folder) -> list[str]:
    """The command's arguments after the interpreter and script, `/elsewhere/` made `folder`."""
    assert argv[0] == ".venv/bin/python" and argv[1].startswith("tools/"), argv
    return [a.replace(ELSEWHERE, f"{folder}/") for a in argv[2:]]


def metrics(path) -> dict[int, dict]:
    """metrics.json's lines by iteration, lines of one iteration merged."""
    by_iter: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        by_iter.setdefault(entry["iteration"], {}).update(entry)
    return by_iter


def test_every_python_block_names_its_file_and_compiles():
    files = project_files()
    for name in ("builders", "selectors", "schedules", "hooks", "backbones", "config"):
        assert f"myproj/{name}.py" in files
    for path, text in files.items():
        compile(text, path, "exec")


# The pages this test keeps honest (docs/settings.md is generated; docs/configs.md has its own).
DOC_PAGES = [
    "README.md",
    *(
        f"docs/{p}"
        for p in sorted(os.listdir(os.path.join(ROOT, "docs")))
        if p.endswith(".md") and p not in ("settings.md", "configs.md")
    ),
    "projects/maskrcnn/README.md",
    "projects/vit/README.md",
]
REPO_PATH = re.compile(r"`((?:configs|pgtrain|tools|projects|tests|benchmarks|docs)/[\w/.\-]*)`")
LINK = re.compile(r"\]\(([^)#:]+\.md)(?:#([^)]*))?\)")


def anchors(path: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    with open(path) as f:
        headings = re.findall(r"^#+ (.*)$", re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M),
                              flags=re.M)  # fmt: skip
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", DOC_PAGES)
def test_every_path_and_link_of_the_docs_exists(page):
    """The file layout changes; the pages name only files, folders and headings that are there."""
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    missing = [p for p in REPO_PATH.findall(text) if not os.path.exists(os.path.join(ROOT, p))]
    folder = os.path.dirname(os.path.join(ROOT, page))
    for target, anchor in LINK.findall(text):
        path = os.path.join(folder, target)
        if not os.path.exists(path):
            missing.append(target)
        elif anchor and anchor not in anchors(path):
            missing.append(f"{target}#{anchor}")
    assert not missing, (page, missing)


def test_the_outside_project_trains_with_its_builder_selector_schedule_and_hook(tmp_path):
    """The newcomer's path: the guide's project, trained and resumed as the guide says."""
    write_project(tmp_path)
    commands = guide_commands()
    trains = [here(c, tmp_path) for c in commands if c[1] == "tools/train_net.py"]
    inspect = [here(c, tmp_path) for c in commands if c[1] == "tools/inspect_param_groups.py"]
    assert len(trains) == 3 and len(inspect) == 1
    first, resume, digits = trains
    assert "--resume" in resume and first[:2] == resume[:2]
    out, digits_out = tmp_path / "run", tmp_path / "digits"
    tiny = ["train.eval_period=0", "train.log_period=1", f"train.output_dir={out}"]
    cases = [
        [*first, *tiny, "train.max_iter=10", "train.checkpoint.period=10"],
        [*resume, *tiny, "train.max_iter=20", "train.checkpoint.period=10"],
        [*digits, "train.max_iter=4", "train.eval_period=4", "train.checkpoint.period=4",
         f"train.output_dir={digits_out}"],
        # The builder's options are checked against its signature before any model exists.
        [*first, *tiny, "+optimizer.params.head_mul=3", f"train.output_dir={tmp_path / 'typo'}"],
    ]  # fmt: skip
    ran, resumed, classified, typo = run_batch("tools/train_net.py", cases, tmp_path)

    assert ran.returncode == 0, ran.stderr[-3000:]
    log = ran.stdout + ran.stderr
    assert "builder 'stem_slow_head_fast'" in log, log[-3000:]
    table = log[log.index("builder 'stem_slow_head_fast'") :]
    for group in ("stem", "default", "body_no_wd", "head"):
        assert re.search(rf"^{group} ", table, flags=re.M), (group, table[:2000])

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_log = resumed.stdout + resumed.stderr
    assert "Starting training at iteration 11 of 20" in resumed_log
    # The decay is a fraction of training: it moved to the new end, and the log says so.
    assert "the checkpoint's -> this run's: x0.5 -> x1" in resumed_log, resumed_log[-3000:]

    by_iter = metrics(out / "metrics.json")
    assert sorted(by_iter) == list(range(1, 21))
    for it, entry in by_iter.items():
        base = entry["lr/default"]
        assert entry["lr/body_no_wd"] == pytest.approx(base)
        assert entry["lr/stem"] == pytest.approx(0.1 * base)
        assert entry["lr/head"] == pytest.approx(5.0 * base)
        assert "smoothed_loss" in entry, it
    # stable_decay after build_schedule's warmup, at where = (iteration - 1) / max_iter: the
    # warmup's first step, then 1, then the decay over the last 20% of each run's length.
    lr = 0.005  # configs/quick/toy.py's optimizer.lr
    assert by_iter[1]["lr/default"] == pytest.approx(lr * 0.001)
    assert by_iter[5]["lr/default"] == pytest.approx(lr)
    assert by_iter[10]["lr/default"] == pytest.approx(lr * 0.5)  # where 0.9 of 10 iterations
    assert by_iter[11]["lr/default"] == pytest.approx(lr)  # where 0.5 of 20
    assert by_iter[20]["lr/default"] == pytest.approx(lr * 0.25)  # where 0.95 of 20

    # The hook's state is in every checkpoint, under its class name.
    for name, it in (("model_0000010.pth", 10), ("model_final.pth", 20)):
        saved = torch.load(out / name, weights_only=True)
        state = saved["trainer"]["hooks"]["SmoothedLoss"]
        assert state["value"] == pytest.approx(by_iter[it]["smoothed_loss"]), name

    assert classified.returncode == 0, classified.stderr[-3000:]
    digits_metrics = metrics(digits_out / "metrics.json")
    assert any("top1" in k for k in digits_metrics[4]), digits_metrics[4]
    assert (digits_out / "model_final.pth").exists()

    assert typo.returncode == 2, typo.stderr[-3000:]
    assert "head_mult" in typo.stderr and "head_mul" in typo.stderr, typo.stderr[-3000:]

    shown = subprocess.run(
        [sys.executable, "tools/inspect_param_groups.py", *inspect[0], "--explain", "stem.weight"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "builder 'stem_slow_head_fast'" in shown.stdout
    (table,) = [t for lang, t in code_blocks(GUIDE) if lang == "text" and "lr at iter 1" in t]
    for line in table.splitlines():  # the guide shows the table the tool prints
        assert line in shown.stdout.splitlines(), line
    assert "lr = 0.0005 (base 0.005 x 0.1)" in shown.stdout, shown.stdout[-2000:]
    assert "by stem (match='stem.*'): lr_mult=0.1, group='stem'" in shown.stdout
