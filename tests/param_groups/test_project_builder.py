"""A user registers a builder in a project folder and selects it by name from the config."""

import textwrap
import uuid

import pytest

from pgtrain.config import LazyConfig, instantiate
from pgtrain.errors import RegistryError
from pgtrain.param_groups import PARAM_GROUP_BUILDERS
from pgtrain.solver import build_optimizer


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def project(tmp_path):
    """projects/<name>/{builders.py, config.py}: the config imports the module that registers."""
    name = f"proj_{uuid.uuid4().hex[:8]}"
    builder = f"stem_frozen_{name}"
    write(tmp_path / name / "__init__.py", "")
    write(
        tmp_path / name / "builders.py",
        f"""
        from pgtrain.param_groups import PARAM_GROUP_BUILDERS, rule_param_groups

        @PARAM_GROUP_BUILDERS.register("{builder}")
        def stem_frozen(model, *, lr, weight_decay=0.0, head_lr=1.0, fresh=None):
            '''Freezes the stem, puts the head at an absolute LR: a project's own grouping.'''
            rules = [dict(match="stem.*", frozen=True),
                     dict(match="head.*", lr=head_lr, group="head")]
            return rule_param_groups(model, lr=lr, weight_decay=weight_decay, rules=rules,
                                     fresh=fresh)
    """,
    )
    write(
        tmp_path / name / "config.py",
        f"""
        from configs.quick.toy import dataloader, lr_scheduler, model, optimizer, train
        from {name} import builders  # registers the project's builder

        optimizer.params.builder = "{builder}"
        del optimizer.params.rules  # the toy's rules are for the `rules` builder
        optimizer.params.head_lr = 0.5
    """,
    )
    return tmp_path / name / "config.py", builder


def test_project_builder_is_selected_by_name_from_the_config(project):
    path, builder = project
    cfg = LazyConfig.load(str(path))
    model = instantiate(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"default", "head"}
    assert groups["head"]["lr"] == 0.5 and groups["head"]["param_names"] == [
        "head.weight",
        "head.bias",
    ]
    names = [n for g in optimizer.param_groups for n in g["param_names"]]
    assert not any(n.startswith("stem.") for n in names)  # frozen: left out of the optimizer
    assert builder in PARAM_GROUP_BUILDERS.names()
    # Loading the config again imports the project module once: no re-registration conflict.
    LazyConfig.load(str(path))


def test_a_misspelt_project_builder_suggests_the_registered_name(project):
    path, builder = project
    cfg = LazyConfig.load(str(path))
    cfg.optimizer.params.builder = builder[:-1]
    with pytest.raises(RegistryError, match=f"did you mean '{builder}'"):
        build_optimizer(cfg.optimizer, instantiate(cfg.model))
