"""``pgtrain <command> ...``: the tools as one installed command, runnable from any folder.

    pgtrain train --config projects/maskrcnn/config.py          # = python tools/train_net.py ...
    pgtrain predict --config ... --weights W.pth --input photos/ --output out/
    pgtrain --help                                              # the commands

Each command is a module of `pgtrain.tools` (``tools/<name>.py`` in a checkout runs the same
code), so ``pgtrain <command> --help`` prints that tool's own help. A ``--config`` path that does
not exist from the working folder is looked up among the configs installed with pgtrain
(``projects/...``, ``configs/...``), as Detectron2's model zoo finds its configs.
"""

import importlib
import os
import sys

__all__ = ["COMMANDS", "main"]

# command -> (module in pgtrain.tools, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train_net", "train (or --eval-only evaluate) a config"),
    "predict": ("predict", "run a trained detector on image files, folders or globs"),
    "inspect": ("inspect_param_groups", "print a config's param groups, per group and parameter"),
    "diff": ("diff_param_groups", "compare the param groups of two configs, runs or checkpoints"),
    "plot-lr": ("plot_lr", "plot every param group's LR schedule"),
    "lr-find": ("lr_find", "LR range test that keeps the groups' LR ratios"),
    "check-dataset": ("check_dataset", "check a COCO-format dataset whole before training"),
    "visualize": ("visualize", "draw a trained detector's predictions on validation images"),
    "convert-checkpoint": ("convert_checkpoint", "convert a sharded checkpoint into one .pth file"),
    "submit": ("submit", "submit a training job to Slurm (submitit)"),
    "settings": ("settings_reference", "the reference of every train.* setting"),
}

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: pgtrain <command> [options]   (pgtrain <command> --help for its options)\n\n"
        "commands:\n" + "\n".join(lines)
    )


def installed_config(path: str) -> str:
    """`path` if it exists, else the config of that relative path installed with pgtrain."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    candidate = os.path.join(_PACKAGE_ROOT, path)
    return candidate if os.path.isfile(candidate) else path


def _with_installed_configs(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = installed_config(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + installed_config(arg.split("=", 1)[1])
    return out


def main(argv: list[str] | None = None) -> None:
    """Runs ``pgtrain <command> [args]``; exits 2 with the command list on a wrong command."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        from pgtrain.utils.suggest import did_you_mean

        print(
            f"pgtrain: '{command}' is not a command{did_you_mean(command, list(COMMANDS))}\n\n"
            + _usage(),
            file=sys.stderr,
        )
        sys.exit(2)
    module = importlib.import_module(f"pgtrain.tools.{COMMANDS[command][0]}")
    sys.argv = [f"pgtrain {command}", *_with_installed_configs(rest)]
    module.cli()


if __name__ == "__main__":
    main()
