import importlib
import multiprocessing
import textwrap
import uuid

import pytest
import torch
from omegaconf import DictConfig

from pgtrain.config import LazyCall as L
from pgtrain.config import LazyConfig, instantiate, to_plain
from pgtrain.errors import ConfigError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def config_tree(tmp_path):
    """A package of configs: base.py, a derived file importing it relatively and by package."""
    # A package name per test: packages stay cached in sys.modules between tests.
    name = f"proj_{uuid.uuid4().hex[:8]}"
    write(tmp_path / name / "__init__.py", "")
    pkg = tmp_path / name / "configs"
    write(pkg / "__init__.py", "")
    write(pkg / "sub" / "__init__.py", "")
    write(
        pkg / "base.py",
        """
        import torch
        from pgtrain.config import LazyCall as L
        __config__ = True
        model = L(torch.nn.Linear)(in_features=4, out_features=2)
        train = dict(max_iter=100, lr=0.1, tag="base")
    """,
    )
    write(
        pkg / "sub" / "derived.py",
        f"""
        from ..base import model, train
        from {name}.configs.base import train as _same_train
        train.max_iter = 10
        assert _same_train is train
        optimizer = dict(lr="${{train.lr}}", steps=[1, 2])
    """,
    )
    return pkg


def test_python_config_with_relative_and_package_imports(config_tree):
    cfg = LazyConfig.load(str(config_tree / "sub" / "derived.py"))
    assert set(cfg) == {"model", "train", "optimizer"}
    assert cfg.train.max_iter == 10
    assert cfg.optimizer.lr == 0.1  # interpolation resolves against the whole config
    assert isinstance(instantiate(cfg.model), torch.nn.Linear)


def test_code_modules_are_imported_once_config_modules_afresh(config_tree):
    write(
        config_tree.parent / "registering.py",
        """
        from pgtrain.registry import Registry
        REG = Registry("TEST")
        COUNT = [0]
        COUNT[0] += 1
        @REG.register()
        def thing():
            return 1
    """,
    )
    write(
        config_tree / "uses_code.py",
        f"""
        from {config_tree.parent.name}.registering import COUNT
        settings = dict(count=COUNT[0])
    """,
    )
    first = LazyConfig.load(str(config_tree / "uses_code.py"))
    second = LazyConfig.load(str(config_tree / "uses_code.py"))
    assert first.settings.count == second.settings.count == 1


def test_imported_configs_are_executed_afresh_each_load(config_tree):
    LazyConfig.load(str(config_tree / "sub" / "derived.py"))  # sets train.max_iter = 10
    base = LazyConfig.load(str(config_tree / "base.py"))
    assert base.train.max_iter == 100


def test_save_writes_yaml_that_loads_back_equal(config_tree, tmp_path):
    cfg = LazyConfig.load(str(config_tree / "sub" / "derived.py"))
    cfg.model.bias = False
    out = tmp_path / "out.yaml"
    LazyConfig.save(cfg, str(out))
    back = LazyConfig.load(str(out))
    assert to_plain(back) == to_plain(cfg)
    assert back.optimizer.lr == 0.1 and "${train.lr}" in out.read_text()  # derivation is kept
    model = instantiate(back.model)
    assert isinstance(model, torch.nn.Linear) and model.bias is None


def test_callable_values_round_trip(tmp_path):
    cfg = DictConfig(
        {
            "norm": torch.nn.BatchNorm2d,
            "opt": L(torch.optim.SGD)(params=[torch.nn.Parameter(torch.zeros(1))], lr=0.1),
        },
        flags={"allow_objects": True},
    )
    LazyConfig.save(
        DictConfig({"norm": cfg.norm}, flags={"allow_objects": True}), str(tmp_path / "c.yaml")
    )
    back = LazyConfig.load(str(tmp_path / "c.yaml"))
    assert instantiate(back.norm) is torch.nn.BatchNorm2d
    assert isinstance(instantiate(cfg.opt), torch.optim.SGD)


def test_lazycall_takes_keywords_only():
    with pytest.raises(ConfigError, match="keyword arguments only"):
        L(torch.nn.Linear)(4, 2)


def test_lambda_cannot_be_saved(tmp_path):
    cfg = DictConfig({"f": L(lambda: 1)()}, flags={"allow_objects": True})
    with pytest.raises(ConfigError, match="lambdas and local functions cannot be saved"):
        LazyConfig.save(cfg, str(tmp_path / "x.yaml"))


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("train.max_iter=5", "train.max_iter", 5),
        ("train.lr=1e-3", "train.lr", 1e-3),
        ("train.tag=hello", "train.tag", "hello"),
        ("train.tag='7'", "train.tag", "7"),
        ("optimizer.steps=[3,4]", "optimizer.steps", [3, 4]),
        ("optimizer.steps=None", "optimizer.steps", None),
        ("model.bias=false", "model.bias", False),
        ("model.bias=True", "model.bias", True),
    ],
)
def test_overrides_are_typed(config_tree, override, key, value):
    cfg = LazyConfig.load(str(config_tree / "sub" / "derived.py"))
    LazyConfig.apply_overrides(cfg, [override])
    node = cfg
    for part in key.split("."):
        node = node[part]
    node = list(node) if not isinstance(node, str | int | float | bool | type(None)) else node
    assert node == value and type(node) is type(value)


def test_override_reaches_derived_values(config_tree):
    cfg = LazyConfig.load(str(config_tree / "sub" / "derived.py"))
    LazyConfig.apply_overrides(cfg, ["train.lr=0.5"])
    assert cfg.optimizer.lr == 0.5


def test_unknown_override_key_suggests_and_plus_adds(config_tree):
    cfg = LazyConfig.load(str(config_tree / "sub" / "derived.py"))
    with pytest.raises(ConfigError, match="train has no key 'max_iters'; did you mean 'max_iter'"):
        LazyConfig.apply_overrides(cfg, ["train.max_iters=3"])
    with pytest.raises(ConfigError, match="the config has no key 'trian'; did you mean 'train'"):
        LazyConfig.apply_overrides(cfg, ["trian.max_iter=3"])
    with pytest.raises(ConfigError, match="key.path=value"):
        LazyConfig.apply_overrides(cfg, ["train.max_iter"])
    LazyConfig.apply_overrides(cfg, ["+train.new.deep=3"])
    assert cfg.train.new.deep == 3


def test_instantiate_errors_name_the_key():
    cfg = DictConfig(
        {"model": {"backbone": L(torch.nn.Linear)(in_features=3, out_featurs=2)}},
        flags={"allow_objects": True},
    )
    with pytest.raises(
        ConfigError,
        match="model.backbone: unexpected keyword 'out_featurs' .*did you mean 'out_features'",
    ):
        instantiate(cfg.model, "model")
    cfg = DictConfig({"m": L(torch.nn.Linear)(in_features=3)}, flags={"allow_objects": True})
    with pytest.raises(ConfigError, match="m: .*Linear needs 'out_features'; set m.out_features"):
        instantiate(cfg.m, "m")
    cfg = DictConfig({"m": {"_target_": "torch.nn.Lineer", "in_features": 3}})
    with pytest.raises(ConfigError, match="cannot import 'torch.nn.Lineer'"):
        instantiate(cfg.m, "m")
    cfg = DictConfig(
        {"m": L(torch.nn.Linear)(in_features=-3, out_features=2)}, flags={"allow_objects": True}
    )
    with pytest.raises(ConfigError, match=r"^m: torch.nn.modules.linear.Linear\(...\) failed"):
        instantiate(cfg.m, "m")


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.py"):
        LazyConfig.load(str(tmp_path / "nope.py"))
    bad = write(tmp_path / "bad.py", "x = dict(a=1\n")
    with pytest.raises(ConfigError, match="bad.py:.*syntax error"):
        LazyConfig.load(str(bad))
    broken = write(tmp_path / "broken.yaml", "a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        LazyConfig.load(str(broken))
    txt = write(tmp_path / "c.txt", "a=1")
    with pytest.raises(ConfigError, match="must end in .py or .yaml"):
        LazyConfig.load(str(txt))


def _imported_file(module: str) -> str:
    return importlib.import_module(module).__file__


def test_a_project_outside_any_package_imports_its_own_modules_relatively(tmp_path):
    """`--config /elsewhere/myproj/config.py` with `from .builders import ...` beside it, and no
    __init__.py: the folder is the project's package (a namespace package), as in the repo."""
    name = f"myproj_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    write(
        folder / "widgets.py",
        """
        from pgtrain.registry import Registry
        WIDGETS = Registry("WIDGET")
        LOADS = [0]
        LOADS[0] += 1
        @WIDGETS.register("knob")
        def knob(size: int = 1):
            return size
    """,
    )
    write(
        folder / "config.py",
        """
        from pgtrain.config import LazyCall as L
        from .widgets import LOADS, knob
        widget = L(knob)(size=3)
        loads = dict(count=LOADS[0])
    """,
    )
    for _ in range(2):  # the project's code module is imported once, the config afresh
        cfg = LazyConfig.load(str(folder / "config.py"))
        assert instantiate(cfg.widget) == 3 and cfg.loads.count == 1
    # Processes started later (a multi-process launch spawns them) import the project's code
    # by the path the config names it with.
    assert cfg.widget._target_ == f"{name}.widgets.knob"
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        assert pool.apply(_imported_file, (f"{name}.widgets",)) == str(folder / "widgets.py")
    # A folder whose name is no Python identifier cannot be a package: relative imports fail
    # with the one-line error, which names the file.
    other = write(tmp_path / "my-proj" / "config.py", "from .widgets import knob\n")
    with pytest.raises(ConfigError, match=r"my-proj/config\.py: .*relative import"):
        LazyConfig.load(str(other))


def test_a_config_yaml_saved_before_the_modules_moved_still_loads_and_builds(tmp_path):
    # An earlier pgtrain wrote each callable's defining module: these paths have moved since.
    from pgtrain.config import instantiate
    from pgtrain.config.lazy_call import locate
    from pgtrain.solver import LRMultiplier

    (tmp_path / "config.yaml").write_text(
        "lr_scheduler:\n"
        "  _target_: pgtrain.solver.lr_scheduler.LRMultiplier\n"
        "  max_iter: 10\n"
        "  schedule:\n"
        "    _target_: pgtrain.solver.schedules.build_schedule\n"
        "    name: cosine\n"
        "    max_iter: 10\n"
    )
    cfg = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert locate(cfg.lr_scheduler._target_) is LRMultiplier
    model = torch.nn.Linear(2, 2)
    cfg.lr_scheduler.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert isinstance(instantiate(cfg.lr_scheduler), LRMultiplier)
    assert locate("pgtrain.param_groups.layer_decay.layer_decay_param_groups").__name__ == (
        "layer_decay_param_groups"
    )
    with pytest.raises(ConfigError, match=r"cannot import 'pgtrain.solver.lr_scheduler.Nope'"):
        locate("pgtrain.solver.lr_scheduler.Nope")


def test_signatures_are_read_once_and_unhashable_callables_still_work():
    from pgtrain.config.lazy_call import check_arguments, signature_of
    from pgtrain.errors import ConfigError

    def builder(model, *, lr, weight_decay=0.0):
        return model

    assert signature_of(builder) is signature_of(builder)  # cached per callable

    class Unhashable:
        __hash__ = None

        def __call__(self, model, *, lr):
            return model

    check_arguments(Unhashable(), {"model": 1, "lr": 0.1}, "optimizer.params", owner="mine")
    with pytest.raises(ConfigError, match=r"unexpected keyword 'lrr' for mine; did you mean"):
        check_arguments(Unhashable(), {"model": 1, "lrr": 0.1}, "optimizer.params", owner="mine")
