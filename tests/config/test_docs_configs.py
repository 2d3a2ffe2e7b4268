"""docs/configs.md is real: its files load, its snippets run, its YAML, error line and commands
are what the code writes, says and accepts."""

import os
import re
import shlex
import uuid

import pytest
import yaml

from pgtrain.config import LazyConfig
from pgtrain.engine import default_argument_parser
from pgtrain.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = os.path.join(REPO, "docs", "configs.md")
FILE_HEADER = re.compile(r"#\s*(\S+\.py)\s*$")


def blocks(text: str) -> list[tuple[str, str]]:
    """The page's fenced code blocks as (language, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.fixture
def page(tmp_path, monkeypatch):
    """The page's blocks with the project renamed (imported packages stay cached per process),
    its files written under tmp_path, which is the working folder."""
    name = f"myproj_{uuid.uuid4().hex[:8]}"
    found = [(lang, body.replace("myproj", name)) for lang, body in blocks(open(PAGE).read())]
    for lang, body in found:
        first = body.splitlines()[0]
        if lang == "python" and FILE_HEADER.match(first):
            path = tmp_path / FILE_HEADER.match(first).group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    monkeypatch.chdir(tmp_path)
    return name, found


def of(found, lang):
    return [body for kind, body in found if kind == lang]


def test_every_block_is_known():
    kinds = {lang for lang, _ in blocks(open(PAGE).read())}
    assert kinds <= {"python", "yaml", "text", "bash"}, kinds


def test_files_load_and_snippets_run(page, tmp_path):
    name, found = page
    files = [b for b in of(found, "python") if FILE_HEADER.match(b.splitlines()[0])]
    assert len(files) == 3
    namespace: dict = {}
    for body in of(found, "python"):
        if not FILE_HEADER.match(body.splitlines()[0]):
            exec(compile(body, PAGE, "exec"), namespace)  # in page order: later ones use earlier
    (recorded,) = of(found, "yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    shown = yaml.safe_load(recorded)["_imports_"]
    assert saved["_imports_"] == {"root": str(tmp_path), "modules": shown["modules"]}
    assert set(shown) == {"root", "modules"}


def test_the_error_line_is_what_forgetting_the_declaration_says(page, tmp_path):
    name, found = page
    base = tmp_path / name / "base.py"
    lines = base.read_text().splitlines(keepends=True)
    base.write_text("".join(line for line in lines if not line.startswith("__config__")))
    (expected,) = of(found, "text")
    with pytest.raises(ConfigError) as caught:
        LazyConfig.load(f"{name}/short.py")
    assert str(caught.value) == expected.strip()


def test_commands_parse_and_name_the_page_files(page):
    name, found = page
    lines = [line for body in of(found, "bash") for line in body.splitlines() if line.strip()]
    configs = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["python", "tools/train_net.py"], line
        assert os.path.isfile(os.path.join(REPO, argv[1]))
        args = default_argument_parser().parse_intermixed_args(argv[2:])
        configs.append((args.config, args.opts))
    (first, opts), (second, _) = configs
    assert first.endswith(f"{name}/short.py")
    output_dir = dict(opt.split("=", 1) for opt in opts)["train.output_dir"]
    assert second == f"{output_dir}/config.yaml"  # the first run's saved config
