"""The fine-tuning commands the project READMEs show, run as written, shrunk to a few iterations.

Each command of the README section is taken from the file itself (so an edit of the README is
tested), its ``./output/`` folders moved under the test's temporary folder, and overrides that
make it tiny appended (a later override wins): a small shapes set or few iterations, and epochs
scaled down by ten.
"""

import re
import shlex

import pytest
import yaml

from tests._cli_batch import ROOT, run_batch
from tests.projects.test_maskrcnn_project import TINY


def readme_commands(readme: str, heading: str) -> list[list[str]]:
    """The command lines of the bash blocks under `heading`, continuations joined."""
    with open(f"{ROOT}/{readme}") as f:
        lines = f.read().splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    section, in_code = [], False
    for line in lines[start + 1 :]:
        in_code ^= line.startswith("```")
        depth = len(line) - len(line.lstrip("#"))
        if not in_code and 0 < depth <= level and line[depth : depth + 1] == " ":
            break  # the next heading of this level or above
        section.append(line)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", "\n".join(section) + "\n", flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line, comments=True))
    return commands


def shrunk(argv: list[str], tmp_path, tiny: list[str]) -> list[str]:
    """The command's arguments after the interpreter and script, in the temporary folder, tiny."""
    assert argv[:2] == [".venv/bin/python", "tools/train_net.py"], argv
    args = [a.replace("./output/", f"{tmp_path}/") for a in argv[2:]]
    epochs = [a for a in args if a.startswith("train.epochs=")]
    scaled = [f"train.epochs={float(e.split('=')[1]) / 10:g}" for e in epochs]
    if not any(a.startswith("train.output_dir=") for a in args):  # never the repo's ./output
        config = args[args.index("--config") + 1]
        args.append(f"train.output_dir={tmp_path}/{config.replace('/', '_')}")
    return [*args, *tiny, *scaled]


@pytest.mark.slow
def test_the_mask_rcnn_fine_tuning_commands(tmp_path):
    commands = readme_commands("projects/maskrcnn/README.md", "## Fine-tuning from the command")
    assert len(commands) == 2
    tiny = [
        f"shapes.root={tmp_path / 'data'}",
        *[t for t in TINY if not t.startswith("dataloader.train.total_batch_size")],
        "shapes.num_train=8",
        "train.eval_period=0",
        "train.checkpoint.period=1ep",
    ]
    first, second = run_batch(
        "tools/train_net.py", [shrunk(c, tmp_path, tiny) for c in commands], tmp_path
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "8 samples / batch 2 = 4 iterations per epoch; 2 epochs = 8 iterations" in first.stdout
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout
    assert (
        "Resumed after 2 epochs (8 iterations) with train.epochs 3 (12 iterations); the "
        "checkpoint's run had 2 epochs (8 iterations)"
    ) in log
    assert "--head-lr-multiplier 10 replaced the config's grouping" in log
    assert re.search(r"optimizer state by name: restored \d+, moved [1-9]", log), log[-3000:]
    assert "Starting training at iteration 9 of 12" in log


@pytest.mark.slow
def test_the_vit_transfer_without_the_head(tmp_path):
    commands = readme_commands("projects/vit/README.md", "### Transfer without the head")
    assert len(commands) == 2
    tiny = ["train.max_iter=4", "train.eval_period=0", "train.checkpoint.period=4"]
    pretrain, transfer = run_batch(
        "tools/train_net.py", [shrunk(c, tmp_path, tiny) for c in commands], tmp_path
    )
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    assert transfer.returncode == 0, transfer.stderr[-3000:]
    log = transfer.stdout
    assert "left out (init_checkpoint_exclude) (2): head.weight, head.bias" in log
    assert (
        "fresh: not in this file, start from their initialization (2): head.weight, head.bias"
        in log
    )


def test_the_running_page_switches_optimizer_and_schedule_from_the_command_line(tmp_path):
    commands = [
        c
        for c in readme_commands("docs/running.md", "## Running a config")
        if any(a.startswith("~") for a in c)
    ]
    assert len(commands) == 2
    tiny = ["train.max_iter=5", "train.eval_period=0", "train.checkpoint.period=5"]
    runs = run_batch(
        "tools/train_net.py",
        [
            [*shrunk(c, tmp_path, tiny), f"train.output_dir={tmp_path / str(i)}"]
            for i, c in enumerate(commands)
        ],
        tmp_path,
    )
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    saved = [yaml.safe_load((tmp_path / str(i) / "config.yaml").read_text()) for i in range(2)]
    optimizer, schedule = saved[0]["optimizer"], saved[1]["lr_scheduler"]["schedule"]
    assert optimizer["_target_"] == "torch.optim.AdamW" and "momentum" not in optimizer
    assert schedule["name"] == "cosine" and "milestones" not in schedule


ALL_READMES = [
    "README.md",
    "docs/running.md",
    "docs/param_groups.md",
    "docs/schedules.md",
    "projects/maskrcnn/README.md",
    "projects/vit/README.md",
]


def every_command(readme: str) -> list[list[str]]:
    """Every command line of every bash block of `readme` that runs a script of this repo."""
    with open(f"{ROOT}/{readme}") as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            scripts = [a for a in argv if a.endswith(".py") and not a.startswith("--")]
            if argv and scripts and "--config" in argv and "FILE" not in argv:
                commands.append(argv)
    return commands


@pytest.mark.parametrize("readme", ALL_READMES)
def test_every_readme_command_names_a_script_a_config_and_overrides_that_exist(readme):
    """The commands not run above (long trainings, a GPU cluster's) still load as written: the
    script exists, the config loads, every override and grouping flag applies, and the run's
    settings pass the checks train_net makes before it starts."""
    import os

    from pgtrain.config import LazyConfig
    from pgtrain.engine import apply_grouping_arguments, check_run_config, default_argument_parser

    commands = every_command(readme)
    assert commands, readme
    for argv in commands:
        script = next(a for a in argv if a.endswith(".py"))
        assert os.path.isfile(f"{ROOT}/{script}"), (readme, script)
        rest = argv[argv.index("--config") :]
        args, unknown = default_argument_parser().parse_known_intermixed_args(rest)
        words = [*args.opts, *unknown]  # other tools' flags and their values land here too
        opts = [w for w in words if w.startswith("~") or ("=" in w and not w.startswith("-"))]
        cfg = LazyConfig.apply_overrides(LazyConfig.load(f"{ROOT}/{args.config}"), opts)
        apply_grouping_arguments(cfg, args)
        if script == "tools/train_net.py":
            check_run_config(cfg)
