"""Print or write the settings reference (docs/settings.md) from the components' declarations.

python tools/settings_reference.py                          # print it
python tools/settings_reference.py --write docs/settings.md # regenerate the page
python tools/settings_reference.py --check docs/settings.md # exit 1 if the page is stale
"""

import argparse
import sys

from pgtrain.engine import settings_markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", metavar="FILE", help="write the reference to FILE")
    action.add_argument("--check", metavar="FILE", help="exit 1 unless FILE is current")
    args = parser.parse_args(argv)
    text = settings_markdown() + "\n"
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
        return 0
    if args.check:
        try:
            with open(args.check) as f:
                current = f.read() == text
        except OSError:
            current = False
        if not current:
            print(
                f"{args.check} is not current; run python tools/settings_reference.py "
                f"--write {args.check}",
                file=sys.stderr,
            )
        return 0 if current else 1
    sys.stdout.write(text)
    return 0


def cli() -> None:
    """The command line: ``pgtrain settings`` / ``python tools/settings_reference.py``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
