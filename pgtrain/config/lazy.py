"""LazyConfig: load Python or YAML config files, save them as YAML, apply command-line overrides."""

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import keyword
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import yaml
from iopath.common.file_io import g_pathmgr
from omegaconf import DictConfig, ListConfig, OmegaConf

from pgtrain.config.lazy_call import locate, signature_keywords
from pgtrain.config.plain import to_plain
from pgtrain.errors import ConfigError, first_line
from pgtrain.utils.file_io import write_text_atomically
from pgtrain.utils.suggest import did_you_mean

__all__ = ["LazyConfig"]

# Config modules are executed afresh by every load (so the edits one config makes to an imported
# base, e.g. `train.max_iter = 10`, never leak into the next load) and their public dicts and lists
# become DictConfig / ListConfig (so a derived config can write `train.max_iter = 10`). A module is
# a config module if it is the loaded file, lies under a folder named `configs`, or its file name
# ends in `config.py` (`projects/vit/vitdet_config.py`). Everything else (code that registers
# builders or models) is imported once, as usual, so registrations happen once.
_CONFIG_MODULES: set[str] = set()


class LazyConfig:
    """Loads, saves and overrides configs made of `LazyCall` nodes and plain values."""

    @staticmethod
    def load(path: str) -> DictConfig:
        """Loads a ``.py`` config (its public dict-like globals) or a ``.yaml`` config.

        A Python config may import other config files, relatively (``from .base import model``) or
        by package (``from configs.common.train import train``); imported configs are executed
        afresh on each load.
        """
        local = g_pathmgr.get_local_path(path) if g_pathmgr.exists(path) else path
        if not os.path.isfile(local):
            raise ConfigError(f"config file not found: {path}")
        if local.endswith(".py"):
            cfg = _load_python(local)
        elif local.endswith((".yaml", ".yml")):
            cfg = _load_yaml(local)
        else:
            raise ConfigError(f"{path}: a config file must end in .py or .yaml")
        return _normalize(cfg)

    @staticmethod
    def import_code(path: str) -> None:
        """Imports the code modules a ``.py`` config imports (a project's builders, models,
        registrations), as loading it would, without keeping the config: what a process started
        after the load (a spawned worker) needs before it builds anything named in the config."""
        local = g_pathmgr.get_local_path(path) if g_pathmgr.exists(path) else path
        if local.endswith(".py") and os.path.isfile(local):
            _load_python(local)

    @staticmethod
    def save(cfg: DictConfig, path: str) -> None:
        """Writes `cfg` as YAML that loads back to an equal config (interpolations kept).

        The file is replaced atomically: a failed write leaves the previous one intact.
        """
        text = LazyConfig.to_yaml(cfg)
        try:
            write_text_atomically(path, text)
        except OSError as e:
            reason = e.strerror or e
            raise ConfigError(f"could not write {path} ({reason}); check the folder") from e

    @staticmethod
    def to_yaml(cfg: DictConfig) -> str:
        """Returns the YAML text `save` writes; callables become import paths.

        Raises:
            ConfigError: naming the key of a value YAML cannot hold (a tensor, a module).
        """
        plain = to_plain(cfg)
        _check_saveable(plain)
        return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, width=100)

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Applies ``key.path=value`` overrides in place and returns `cfg`.

        Values are Python literals where they parse (``1``, ``1e-3``, ``[1,2]``, ``None``,
        ``True``), YAML words ``true``/``false``/``null``, lists and dicts in YAML's flow style
        (``[pos_embed, cls_token]``, ``[{match: head.*, lr_mult: 10}]``), else strings; a value
        that starts like a list or dict but does not parse is an error. A key must exist; prefix
        it with ``+`` to add a new one. ``~key.path`` removes a key (Hydra's spelling), so a
        class can be switched with the options it does not take removed:
        ``optimizer._target_=torch.optim.AdamW ~optimizer.momentum``. An unknown key is an error
        with close names.
        """
        for item in overrides:
            if item.startswith("~"):
                _remove_key(cfg, item)
                continue
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(
                    f"override '{item}' is not of the form key.path=value (or ~key.path to "
                    "remove a key)"
                )
            add = key.startswith("+")
            key = key.lstrip("+")
            if not add:
                _check_key_exists(cfg, key, item)
            OmegaConf.update(cfg, key, _parse_value(raw, item), merge=False, force_add=True)
        return cfg


_YAML_SCALARS = (str, int, float, bool, type(None))


def _check_saveable(node: Any, where: str = "") -> None:
    """Raises a ConfigError naming the first value in `node` that ``yaml.safe_dump`` rejects."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_saveable(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_saveable(value, f"{where}[{i}]")
    elif type(node) not in _YAML_SCALARS:
        shown = repr(node).splitlines()[0][:60]
        raise ConfigError(
            f"{where or 'config'}: a {type(node).__name__} ({shown}) cannot be saved in YAML; "
            "describe it with a LazyCall node, e.g. LazyCall(torch.ones)(size=[2]), or a plain "
            "value"
        )


def _load_python(path: str) -> DictConfig:
    root, module_name = _module_name(os.path.abspath(path))
    importlib.invalidate_caches()  # see config files written since the last import
    with _on_sys_path(root), _config_importer(os.path.abspath(path)):
        try:
            module = importlib.import_module(module_name)
        except ConfigError:
            raise
        except SyntaxError as e:
            raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from e
        except ImportError as e:
            raise ConfigError(f"{path}: {e}") from e
        except Exception as e:  # the file's own code failed: name the line it failed on
            raise ConfigError(f"{_failing_line(e, path)}: {type(e).__name__}: {e}") from e
    _keep_importable(root)
    content = {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, DictConfig | ListConfig)
    }
    return DictConfig(content, flags={"allow_objects": True})


def _keep_importable(root: str) -> None:
    """Leaves `root` on ``sys.path`` (at its end) when the config imported code modules from
    under it (a project's builders or models): instantiating names them by import path, also in
    processes spawned later, which start from this ``sys.path``."""
    if root in sys.path or any(os.path.abspath(p) == root for p in sys.path if p):
        return
    prefix = root.rstrip(os.sep) + os.sep
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin and name not in _CONFIG_MODULES and os.path.abspath(origin).startswith(prefix):
            sys.path.append(root)
            return


def _failing_line(error: BaseException, path: str) -> str:
    """``path:line`` of the deepest frame of `error` inside the config file (or any config)."""
    frames = traceback.extract_tb(error.__traceback__)
    target = os.path.abspath(path)
    inside = [f for f in frames if os.path.abspath(f.filename) == target] or [
        f for f in frames if f.filename.endswith(".py") and "importlib" not in f.filename
    ]
    if not inside:
        return path
    frame = inside[-1]
    return f"{frame.filename if frame.filename != target else path}:{frame.lineno}"


def _load_yaml(path: str) -> DictConfig:
    with open(path) as f:
        try:
            content = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {first_line(e)}") from e
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: a YAML config must be a mapping at the top level")
    return DictConfig(content, flags={"allow_objects": True})


def _normalize(cfg: DictConfig) -> DictConfig:
    """Puts a loaded config in the form YAML would give (callables as import-path calls)."""
    return DictConfig(to_plain(cfg), flags={"allow_objects": True})


def _module_name(path: str) -> tuple[str, str]:
    """Returns (root folder, dotted module name) for a file inside packages (``__init__.py``).

    A file in a folder without ``__init__.py`` (a project kept outside this repository,
    ``/elsewhere/myproj/config.py``) is loaded as a module of its folder, taken as a namespace
    package, so ``from .builders import ...`` beside it works as it does in the repo's projects.
    The folder's name must be a Python identifier not already importable as something else.
    """
    folder, file = os.path.split(path)
    parts = [os.path.splitext(file)[0]]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, name = os.path.split(folder)
        parts.insert(0, name)
    if len(parts) == 1:
        parent, name = os.path.split(folder)
        if _namespace_available(name, folder):
            return parent, f"{name}.{parts[0]}"
    return folder, ".".join(parts)


def _namespace_available(name: str, folder: str) -> bool:
    """Whether `folder` can be imported as the namespace package `name` without shadowing or
    being shadowed by another module of that name."""
    if not name.isidentifier() or keyword.iskeyword(name):
        return False
    loaded = sys.modules.get(name)
    if loaded is not None:  # the same folder, loaded before, is fine
        return folder in list(getattr(loaded, "__path__", []))
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    # Free, or this very folder (on sys.path since an earlier load, or in a spawned process)
    locations = (
        [os.path.abspath(p) for p in (spec.submodule_search_locations or [])] if spec else []
    )
    return spec is None or (spec.origin in (None, "namespace") and folder in locations)


@contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _is_config_file(origin: str | None, top_file: str) -> bool:
    if not origin or not origin.endswith(".py"):
        return False
    origin = os.path.abspath(origin)
    folders = os.path.dirname(origin).split(os.sep)
    return origin == top_file or "configs" in folders or origin.endswith("config.py")


class _ConfigFinder(importlib.abc.MetaPathFinder):
    """Finds config modules with the normal path finder, but loads them with `_ConfigLoader`."""

    def __init__(self, top_file: str) -> None:
        self._top_file = top_file

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is not None:
            return None  # packages (`__init__.py`) are ordinary modules
        if not _is_config_file(spec.origin, self._top_file):
            return None
        spec.loader = _ConfigLoader(spec.loader)
        _CONFIG_MODULES.add(fullname)
        return spec


class _ConfigLoader(importlib.abc.Loader):
    """Executes a config file, then turns its public dicts and lists into DictConfig/ListConfig."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return None

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        for name, value in list(vars(module).items()):
            if not name.startswith("_") and isinstance(value, dict | list):
                cls = DictConfig if isinstance(value, dict) else ListConfig
                setattr(module, name, cls(value, flags={"allow_objects": True}))


@contextmanager
def _config_importer(top_file: str) -> Iterator[None]:
    for name in list(_CONFIG_MODULES):
        _forget_module(name)
    finder = _ConfigFinder(top_file)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in list(_CONFIG_MODULES):
            _forget_module(name)


def _forget_module(name: str) -> None:
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    # `from package import child` would otherwise find the stale attribute on the package.
    if parent in sys.modules and getattr(sys.modules[parent], child, None) is not None:
        delattr(sys.modules[parent], child)


def _check_key_exists(cfg: DictConfig, key: str, item: str, removing: bool = False) -> Any:
    """Returns the node holding `key`'s last part; raises unless `key` exists, or (when not
    `removing`) names an argument its call node's target accepts."""
    node: Any = cfg
    parent: Any = cfg
    done: list[str] = []
    for part in key.split("."):
        parent = node
        if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        elif isinstance(node, DictConfig) and part in [str(k) for k in node.keys()]:
            node = node._get_node(part)
        else:
            choices = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
            accepted = _accepted_arguments(node)
            if part in accepted and not removing:
                return node  # an argument left at its default, now set from the command line
            where = ".".join(done) or "the config"
            hint = "nothing to remove" if removing else f"use '+{key}=...' to add a new key"
            raise ConfigError(
                f"override '{item}': {where} has no key '{part}'"
                f"{did_you_mean(part, choices + accepted)} ({hint})"
            )
        done.append(part)
    return parent


def _remove_key(cfg: DictConfig, item: str) -> None:
    key = item[1:]
    if "=" in key:
        raise ConfigError(
            f"override '{item}': ~ removes a key; write ~{key.partition('=')[0]} (without a value)"
        )
    if not key:
        raise ConfigError(f"override '{item}' names no key; write ~key.path to remove one")
    parent = _check_key_exists(cfg, key, item, removing=True)
    last = key.rpartition(".")[2]
    del parent[int(last) if isinstance(parent, ListConfig) else last]


def _accepted_arguments(node: Any) -> list[str]:
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return []
    target = node._target_
    try:
        found = signature_keywords(locate(target) if isinstance(target, str) else target)
    except ConfigError:
        return []
    return found[0] if found else []


def _parse_value(raw: str, item: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        pass
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    if lowered[:1] in ("[", "{"):  # YAML's flow style: [pos_embed], [{match: head.*, lr_mult: 10}]
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            value = e
        if not isinstance(value, list | dict):
            reason = first_line(value) if isinstance(value, Exception) else "not a list"
            key = item.partition("=")[0]
            raise ConfigError(
                f"override '{item}': the value looks like a list or dict but does not parse "
                f"({reason}); write it as YAML or Python and quote it for the shell, e.g. "
                f"'{key}=[a, b]' or '{key}=[{{match: head.*, lr_mult: 10}}]'"
            )
        return value
    return raw
