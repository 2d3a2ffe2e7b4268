"""A module is a config because it is the loaded file or declares `__config__ = True`, never
because of its file name; a config that takes a section from an undeclared module is an error;
a saved config.yaml names the project's code modules and imports them when it is loaded."""

import os
import subprocess
import sys
import uuid

import pytest
import yaml
from omegaconf import DictConfig

from pgtrain.config import LazyConfig
from pgtrain.errors import ConfigError
from tests.config.test_lazy import write

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def project(tmp_path):
    """A project folder outside the repository, without __init__.py (a namespace package):
    its name is unique per test since imported packages stay in sys.modules."""
    folder = tmp_path / f"proj_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def test_a_module_declaring_itself_is_a_config_whatever_its_name(project):
    write(
        project / "settings.py",
        """
        __config__ = True
        train = dict(max_iter=100, tag="settings")
        widths = [8, 16]
        """,
    )
    write(
        project / "config.py",
        """
        from .settings import train, widths
        train.max_iter = 5  # attribute access: the dict became a DictConfig
        widths.append(32)
        """,
    )
    write(project / "other.py", "from .settings import train, widths\n")
    cfg = LazyConfig.load(str(project / "config.py"))
    assert cfg.train.max_iter == 5 and list(cfg.widths) == [8, 16, 32]
    assert f"{project.name}.settings" not in sys.modules  # forgotten: the next load runs it
    # The first load's edits did not leak: a second load sees a fresh copy.
    again = LazyConfig.load(str(project / "other.py"))
    assert again.train.max_iter == 100 and list(again.widths) == [8, 16]
    assert "_imports_" not in cfg and "_imports_" not in again  # no code modules imported


def test_a_file_named_like_a_config_without_the_declaration_is_code(project):
    write(
        project / "dataset_config.py",
        """
        LOADS = [0]
        LOADS[0] += 1
        SIZES = [8, 16]
        DEFAULTS = dict(size=8)

        def make_dataset(sizes, size):
            return dict(sizes=list(sizes), size=size)
        """,
    )
    write(
        project / "config.py",
        """
        from pgtrain.config import LazyCall as L
        from . import dataset_config
        from .dataset_config import make_dataset
        data = L(make_dataset)(sizes=dataset_config.SIZES, size=dataset_config.DEFAULTS["size"])
        """,
    )
    name = f"{project.name}.dataset_config"
    first = LazyConfig.load(str(project / "config.py"))
    module = sys.modules[name]  # kept: imported once, as code is
    second = LazyConfig.load(str(project / "config.py"))
    assert sys.modules[name] is module and module.LOADS == [1]
    assert type(module.SIZES) is list and type(module.DEFAULTS) is dict  # values untouched
    assert first.data.size == second.data.size == 8
    assert first._imports_ == {"root": str(project.parent), "modules": [name]}


def test_taking_sections_from_an_undeclared_module_names_it_and_the_fix(project, monkeypatch):
    monkeypatch.chdir(project.parent)  # paths in the message as the user types them
    write(
        project / "my_settings.py",
        """
        import torch
        from pgtrain.config import LazyCall as L
        optimizer = L(torch.optim.SGD)(lr=0.1)
        train = dict(max_iter=10)
        """,
    )
    write(
        project / "config.py",
        """
        from .my_settings import optimizer, train
        optimizer.lr = 0.5
        """,
    )
    expected = (
        f"{project.name}/my_settings.py gives config values (optimizer, train) to "
        f"{project.name}/config.py but does not declare itself a config; add "
        "`__config__ = True` at its top"
    )
    for _ in range(2):  # also once the module is imported: the next load would see lr=0.5
        with pytest.raises(ConfigError) as caught:
            LazyConfig.load(str(project / "config.py"))
        assert str(caught.value) == expected
    # A plain dict alone counts too, as does a value passed on by a declared config.
    write(project / "base.py", "__config__ = True\nfrom .my_settings import train\n")
    write(project / "derived.py", "from .base import train\ntrain['max_iter'] = 3\n")
    with pytest.raises(ConfigError, match=r"my_settings\.py gives config values \(train\) to "):
        LazyConfig.load(str(project / "derived.py"))


def test_nested_sections_and_lists_of_sections_from_an_undeclared_module_are_refused(project):
    # A section nested in the config's own dict, a list of LazyCall hooks and a list of rules:
    # each is the code module's object, so the config's edits would reach the next load.
    write(
        project / "shared.py",
        """
        import torch
        from pgtrain.config import LazyCall as L
        TRAIN = L(torch.optim.SGD)(lr=0.1)
        hooks = [L(torch.optim.SGD)(lr=0.2)]
        rules = [dict(match="head.*", lr_mult=10)]
        counts = [1, 2]  # plain values: no section
        """,
    )
    cases = {
        "nested.py": "from .shared import TRAIN\ndataloader = dict(train=TRAIN)\n",
        "hooks_list.py": "from .shared import hooks\nhooks.append(None)\n",
        "rules_list.py": "from . import shared\noptimizer = dict(rules=shared.rules)\n",
    }
    for file, text in cases.items():
        write(project / file, text)
        with pytest.raises(
            ConfigError, match=r"shared\.py gives config values \((TRAIN|hooks|rules)\)"
        ):
            LazyConfig.load(str(project / file))
    write(project / "counts.py", "from .shared import counts\nwidths = counts\n")
    assert list(LazyConfig.load(str(project / "counts.py")).widths) == [1, 2]


def test_a_class_defined_in_the_config_file_itself_is_one_line(project):
    # Neither check_calls, a spawned process nor config.yaml can import a config's own class.
    write(
        project / "config.py",
        """
        from pgtrain.config import LazyCall as L
        from pgtrain.engine import HookBase
        class Inline(HookBase):
            pass
        hooks = [L(Inline)()]
        """,
    )
    with pytest.raises(ConfigError, match=r"hooks\.0 uses 'Inline', defined in a config file"):
        LazyConfig.load(str(project / "config.py"))


def test_a_package_giving_sections_is_told_to_move_them(tmp_path):
    name = f"pkg_{uuid.uuid4().hex[:8]}"
    write(tmp_path / name / "__init__.py", "train = dict(max_iter=10)\n")
    write(tmp_path / name / "config.py", f"from {name} import train\n")
    with pytest.raises(ConfigError, match=r"__init__\.py gives config values \(train\) .*move"):
        LazyConfig.load(str(tmp_path / name / "config.py"))


def test_declaration_is_read_not_executed(project):
    write(
        project / "notes.py",
        """
        RAN = [0]
        RAN[0] += 1
        def later():
            __config__ = True  # not at the top level: no declaration
            return __config__
        """,
    )
    write(project / "config.py", "from .notes import RAN\nseen = dict(ran=RAN[0])\n")
    assert LazyConfig.load(str(project / "config.py")).seen.ran == 1
    assert LazyConfig.load(str(project / "config.py")).seen.ran == 1  # code: executed once


def test_a_name_in_imports_that_cannot_be_imported_is_one_line(tmp_path):
    saved = tmp_path / "config.yaml"
    saved.write_text(
        yaml.safe_dump({"a": 1, "_imports_": {"root": str(tmp_path), "modules": ["nope_x.b"]}})
    )
    with pytest.raises(ConfigError) as caught:
        LazyConfig.load(str(saved))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{saved}: cannot import 'nope_x.b' named in _imports_")
    saved.write_text(yaml.safe_dump({"a": 1, "_imports_": ["nope_x.b"]}))
    with pytest.raises(ConfigError, match="_imports_ must be a mapping with 'root'"):
        LazyConfig.load(str(saved))


FRESH_PROCESS = """
import sys

import yaml

from pgtrain.config import LazyConfig
from pgtrain.engine import build_run, check_run_config
from pgtrain.errors import PgtrainError
from pgtrain.param_groups import PARAM_GROUP_BUILDERS

saved, stripped, builder = sys.argv[1:]
try:  # without _imports_ nothing registers the project's builder
    build_run(LazyConfig.load(stripped), device="cpu")
    sys.exit("built without the project's builder")
except PgtrainError as e:
    assert builder in str(e), e
LazyConfig.import_code(saved)  # what a spawned worker does first
assert builder in PARAM_GROUP_BUILDERS.names()
cfg = LazyConfig.load(saved)
check_run_config(cfg)
run = build_run(cfg, device="cpu")
print(sorted(g["name"] for g in run.optimizer.param_groups))
"""


def test_a_saved_config_reloads_in_a_fresh_process_with_the_projects_builder(project):
    builder = f"stem_frozen_{project.name}"
    write(
        project / "builders.py",
        f"""
        from pgtrain.param_groups import PARAM_GROUP_BUILDERS, rule_param_groups

        @PARAM_GROUP_BUILDERS.register("{builder}")
        def stem_frozen(model, *, lr, weight_decay=0.0, fresh=None):
            rules = [dict(match="stem.*", frozen=True), dict(match="head.*", group="head")]
            return rule_param_groups(model, lr=lr, weight_decay=weight_decay, rules=rules,
                                     fresh=fresh)
        """,
    )
    write(
        project / "config.py",
        f"""
        from configs.quick.toy import dataloader, lr_scheduler, model, optimizer, train
        from . import builders  # registers the project's builder

        optimizer.params.builder = "{builder}"
        del optimizer.params.rules
        """,
    )
    cfg = LazyConfig.load(str(project / "config.py"))
    assert cfg._imports_ == {"root": str(project.parent), "modules": [f"{project.name}.builders"]}
    LazyConfig.apply_overrides(cfg, [f"train.output_dir={project.parent / 'run'}"])
    saved = project.parent / "config.yaml"
    LazyConfig.save(cfg, str(saved))
    assert yaml.safe_load(saved.read_text())["_imports_"] == dict(cfg._imports_)
    plain = yaml.safe_load(saved.read_text())
    del plain["_imports_"]
    stripped = project.parent / "stripped.yaml"
    stripped.write_text(yaml.safe_dump(plain, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the project's folder is not importable but for _imports_
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(saved), str(stripped), builder],
        cwd=project.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['default', 'head']"


def test_imports_key_is_kept_through_yaml(project, tmp_path):
    write(project / "widgets.py", "def knob(size=1):\n    return size\n")
    write(
        project / "config.py",
        "from pgtrain.config import LazyCall as L\nfrom .widgets import knob\n"
        "widget = L(knob)(size=3)\n",
    )
    cfg = LazyConfig.load(str(project / "config.py"))
    LazyConfig.save(cfg, str(tmp_path / "a.yaml"))
    back = LazyConfig.load(str(tmp_path / "a.yaml"))
    assert isinstance(back, DictConfig) and back._imports_ == cfg._imports_
    LazyConfig.save(back, str(tmp_path / "b.yaml"))
    assert (tmp_path / "a.yaml").read_text() == (tmp_path / "b.yaml").read_text()
