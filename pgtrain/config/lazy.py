"""LazyConfig: load Python or YAML config files, save them as YAML, apply command-line overrides."""

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import keyword
import os
import site
import sys
import sysconfig
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import yaml
from iopath.common.file_io import g_pathmgr
from omegaconf import DictConfig, ListConfig, OmegaConf, ValueNode

from pgtrain.config.lazy_call import TARGET, locate, signature_keywords
from pgtrain.config.plain import to_plain
from pgtrain.errors import ConfigError, first_line
from pgtrain.utils.file_io import write_text_atomically
from pgtrain.utils.suggest import did_you_mean

__all__ = ["LazyConfig"]

# Config modules are executed afresh by every load (so the edits one config makes to an imported
# base, e.g. `train.max_iter = 10`, never leak into the next load) and their public dicts and lists
# become DictConfig / ListConfig (so a derived config can write `train.max_iter = 10`). A module is
# a config module if it is the file a load was given, or if it declares itself one with the
# top-level statement `__config__ = True` (read from its source, never by running it). Everything
# else (code that registers builders or models) is imported once, as usual, so registrations
# happen once. This set names every config module of every load: they are forgotten around loads.
_CONFIG_MODULES: set[str] = set()

# The declaration a config module makes at its top level.
_DECLARATION = "__config__"

# The key of a saved config that names the code modules its .py config imported (a project's
# builders, models): loading the YAML imports them, so names they register resolve. Its leading
# underscore keeps it apart from a config's own values, which are public names.
IMPORTS_KEY = "_imports_"

# Modules that are never configs nor a project's code: the framework's own package (the
# repository's configs lie beside it) and installed libraries (a virtual environment may lie
# inside a project's folder). Only other modules are read for a declaration.
_NOT_USER_CODE = tuple(
    {
        os.path.abspath(folder).rstrip(os.sep) + os.sep
        for folder in [
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            *(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")),
            *site.getsitepackages(),
            site.getusersitepackages(),
        ]
    }
)


class LazyConfig:
    """Loads, saves and overrides configs made of `LazyCall` nodes and plain values."""

    @staticmethod
    def load(path: str) -> DictConfig:
        """Loads a ``.py`` config (its public dict-like globals) or a ``.yaml`` config.

        A Python config may import other config files, relatively (``from .base import model``) or
        by package (``from configs.common.train import train``). An imported module is a config
        when its top level declares ``__config__ = True``; imported configs are executed afresh
        on each load. A YAML config imports the code modules its ``_imports_`` names.

        Raises:
            ConfigError: one line naming the file; also when a config holds a section taken
                from an imported module that does not declare itself a config.
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
        """Imports the code modules a config imports (a project's builders, models,
        registrations), as loading it would, without keeping the config: what a process started
        after the load (a spawned worker) needs before it builds anything named in the config.
        A ``.yaml`` config names them under ``_imports_`` (written by `save`)."""
        local = g_pathmgr.get_local_path(path) if g_pathmgr.exists(path) else path
        if not os.path.isfile(local):
            return
        if local.endswith(".py"):
            _load_python(local)
        elif local.endswith((".yaml", ".yml")):
            _load_yaml(local)

    @staticmethod
    def save(cfg: DictConfig, path: str) -> None:
        """Writes `cfg` as YAML that loads back to an equal config (interpolations kept).

        A config loaded from a ``.py`` file whose configs imported project code modules (a
        builder's registration) holds ``_imports_`` (their names and the load's root folder): it
        is saved with the rest, and loading the YAML, in any process, imports them again. The
        file is replaced atomically: a failed write leaves the previous one intact.
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
    """Executes a .py config (and the configs it imports, afresh); returns its public dicts and
    lists, plus ``_imports_`` naming the project code modules its configs import and the root
    folder the load put on ``sys.path`` to import them."""
    root, module_name = _module_name(os.path.abspath(path))
    load = _Load(os.path.abspath(path), module_name)
    importlib.invalidate_caches()  # see config files written since the last import
    with _on_sys_path(root), _config_importer(load):
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
    content: dict[str, Any] = {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, DictConfig | ListConfig)
    }
    _check_no_config_callables(content, {*_CONFIG_MODULES, module_name}, path)
    if load.code_modules:
        content[IMPORTS_KEY] = {"root": root, "modules": sorted(load.code_modules)}
    return DictConfig(content, flags={"allow_objects": True})


def _check_no_config_callables(content: Any, config_modules: set[str], path: str) -> None:
    """Raises when the config calls a class or function that a config file defines: a config
    is run again at every load and is no module to import by name, so neither the checks, a
    spawned process nor a saved config.yaml could find it."""
    for key, value in _callables(content, ""):
        name = getattr(value, "__qualname__", "")
        if getattr(value, "__module__", None) in config_modules and "<" not in name:
            key = key.removesuffix(f".{TARGET}")  # a lambda has no name at all: `to_plain` says so
            raise ConfigError(
                f"{path}: {key} uses '{name}', defined in a config file ({value.__module__}); "
                "define it in a code module beside the config (e.g. hooks.py) and import it"
            )


def _callables(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(config key, value)`` for every class or function a config holds (interpolations are
    not resolved)."""
    for key, child in _items(node) or []:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(child, ValueNode):
            child = child._value()
        if callable(child) and not isinstance(child, DictConfig | ListConfig):
            yield path, child
        else:
            yield from _callables(child, path)


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
    """Reads a YAML config and imports the code modules its ``_imports_`` names."""
    with open(path) as f:
        try:
            content = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {first_line(e)}") from e
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: a YAML config must be a mapping at the top level")
    if IMPORTS_KEY in content:
        _import_recorded(content[IMPORTS_KEY], path)
    return DictConfig(content, flags={"allow_objects": True})


def _import_recorded(entry: Any, path: str) -> None:
    """Imports the code modules a saved config names (``_imports_: {root, modules}``), with
    their root folder put on ``sys.path`` as the .py load leaves it: what registers a
    project's builders, schedules or backbones by name, in this process or a fresh one."""
    modules = entry.get("modules") if isinstance(entry, dict) else None
    root = entry.get("root") if isinstance(entry, dict) else None
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(
            f"{path}: {IMPORTS_KEY} must be a mapping with 'root' (a folder) and 'modules' (a "
            "list of module names), as LazyConfig.save writes it; fix or remove it"
        )
    if isinstance(root, str) and os.path.isdir(root):
        if not any(p and os.path.abspath(p) == os.path.abspath(root) for p in sys.path):
            sys.path.append(root)
    importlib.invalidate_caches()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:
            raise ConfigError(
                f"{path}: cannot import '{name}' named in {IMPORTS_KEY} ({type(e).__name__}: "
                f"{first_line(e)}); the config's code was under {root}: make '{name}' importable "
                f"there or on PYTHONPATH, or remove it from {IMPORTS_KEY}"
            ) from e


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


# An import statement: the absolute module name and the names taken from it.
_Imported = tuple[str, tuple[str, ...]]


class _Load:
    """One .py load: the file it was given (a config by being given), the config modules it
    executed, and the project code modules those import (recorded as ``_imports_``)."""

    def __init__(self, top_file: str, top_name: str) -> None:
        self.top_file = top_file
        self.top_name = top_name
        self.configs: set[str] = set()  # the config modules of this load
        self.code_modules: set[str] = set()  # project code modules they import

    def config_tree(self, fullname: str, spec: Any) -> ast.Module | None:
        """The parsed source of the module `spec` finds when it is a config module (the loaded
        file, or a project module declaring ``__config__ = True``), else None. A config module's
        tree also tells which modules it imports. Nothing is executed; a module whose source does
        not mention the declaration is not parsed, and installed libraries are not read."""
        origin = os.path.abspath(spec.origin) if spec.origin else None
        given = fullname == self.top_name or origin == self.top_file
        if not given and not _user_file(origin):
            return None
        try:
            source = spec.loader.get_source(fullname)
        except (ImportError, OSError, AttributeError):
            source = None
        if source is None:
            return ast.Module(body=[], type_ignores=[]) if given else None
        if not given and _DECLARATION not in source:
            return None
        try:
            tree = ast.parse(source, filename=origin or fullname)
        except SyntaxError:  # executing it reports the error, with its line
            return ast.Module(body=[], type_ignores=[]) if given else None
        return tree if given or _declares_config(tree) else None

    def givers(self, imports: list[_Imported]) -> list[Any]:
        """The project code modules (not configs, not the framework's or installed ones) that
        a config module's import statements name, once it ran: those whose values it may have
        taken, and those that register what it names (a builder, a backbone)."""
        found = {}
        for base, names in imports:
            for name in [f"{base}.{n}" for n in names] or [base]:
                module = sys.modules.get(name)
                if module is None or not inspect.ismodule(module):
                    module = sys.modules.get(base)  # `from package import value`
                    name = base
                if module is None or name in self.configs or name in found:
                    continue
                if _user_file(getattr(module, "__file__", None)):
                    found[name] = module
        return list(found.values())


def _user_file(origin: str | None) -> bool:
    """Whether a module's file is a project's own (a config or code beside configs), not the
    framework's or an installed library's."""
    return bool(origin) and not os.path.abspath(origin).startswith(_NOT_USER_CODE)


def _declares_config(tree: ast.Module) -> bool:
    """Whether a module's top level holds ``__config__ = True`` (or ``__config__: bool = True``)."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        named = any(isinstance(t, ast.Name) and t.id == _DECLARATION for t in targets)
        if named and isinstance(node.value, ast.Constant) and node.value.value is True:
            return True
    return False


def _imported_modules(tree: ast.Module, package: str) -> list[_Imported]:
    """The absolute module names a module's import statements name, each with the names taken
    from it (``from base import a, b``: ``a`` and ``b`` may be submodules or values)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):
                continue
            names = tuple(a.name for a in node.names if a.name != "*")
            found.append((base.rstrip("."), names))
    return found


def _shown(path: str) -> str:
    """`path` relative to the working folder when it lies inside it (as users type it)."""
    path = os.path.abspath(path)
    cwd = os.getcwd().rstrip(os.sep) + os.sep
    return path[len(cwd) :] if path.startswith(cwd) else path


class _ConfigFinder(importlib.abc.MetaPathFinder):
    """Finds config modules with the normal path finder, but loads them with `_ConfigLoader`."""

    def __init__(self, load: _Load) -> None:
        self._load = load

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is not None:
            return None  # packages (`__init__.py`) are ordinary modules
        if not spec.origin or not spec.origin.endswith(".py"):
            return None
        tree = self._load.config_tree(fullname, spec)
        if tree is None:
            return None
        imports = _imported_modules(tree, fullname.rpartition(".")[0])
        spec.loader = _ConfigLoader(spec.loader, self._load, imports)
        self._load.configs.add(fullname)
        _CONFIG_MODULES.add(fullname)
        return spec


class _ConfigLoader(importlib.abc.Loader):
    """Executes a config file, checks it took no config values from an undeclared module,
    records the code modules it imports, then turns its public dicts and lists into
    DictConfig/ListConfig."""

    def __init__(self, loader: Any, load: _Load, imports: list[_Imported]) -> None:
        self._loader = loader
        self._load = load
        self._imports = imports

    def create_module(self, spec: Any) -> Any:
        return None

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        givers = self._load.givers(self._imports)
        _check_givers_declared(module, givers)
        self._load.code_modules.update(m.__name__ for m in givers)
        for name, value in list(vars(module).items()):
            if not name.startswith("_") and isinstance(value, dict | list):
                cls = DictConfig if isinstance(value, dict) else ListConfig
                setattr(module, name, cls(value, flags={"allow_objects": True}))


def _check_givers_declared(module: Any, givers: list[Any]) -> None:
    """Raises when config `module` holds, anywhere in its public values, a section of a code
    module it imported (the very object: a mapping, such as a LazyCall node or a plain dict, or
    a list holding mappings, such as hooks or rules): that module is not executed afresh by the
    next load, so the edits this config makes to the section would leak into every later load.
    Lists of plain values (a counter, class names) are left alone: they are no sections."""
    held: set[int] = set()
    for name, value in vars(module).items():
        if not name.startswith("_"):
            _sections(value, held)
    if not held:
        return
    for giver in givers:
        names = []
        for name, value in vars(giver).items():
            found: set[int] = set()
            if not name.startswith("_"):
                _sections(value, found)
            if found & held:
                names.append(name)
        if not names:
            continue
        where = _shown(giver.__file__)
        fix = "add `__config__ = True` at its top"
        if hasattr(giver, "__path__"):  # a package's __init__.py is always a code module
            fix = "move them into a module of their own that declares `__config__ = True`"
        raise ConfigError(
            f"{where} gives config values ({', '.join(sorted(names))}) to "
            f"{_shown(module.__file__)} but does not declare itself a config; {fix}"
        )


def _sections(value: Any, out: set[int], depth: int = 0) -> None:
    """Adds to `out` the ids of the sections reachable from `value`: mappings, and lists that
    hold a mapping (interpolations are not resolved)."""
    items = _items(value)
    if items is None or depth > 16 or id(value) in out:
        return
    children = [child for _, child in items]
    mappings = (dict, DictConfig)
    if isinstance(value, mappings) or any(isinstance(c, mappings) for c in children):
        out.add(id(value))
    for child in children:
        _sections(child, out, depth + 1)


def _items(node: Any) -> list[tuple[Any, Any]] | None:
    """``(key, child)`` of a config container (a DictConfig's or ListConfig's nodes as stored,
    interpolations unresolved; a dict's or list's values); None for anything else."""
    if isinstance(node, DictConfig | ListConfig) and node._is_none():
        return []
    if isinstance(node, DictConfig):
        return [(k, node._get_node(k)) for k in node.keys()]
    if isinstance(node, ListConfig):
        return [(i, node._get_node(i)) for i in range(len(node))]
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, list | tuple):
        return list(enumerate(node))
    return None


@contextmanager
def _config_importer(load: _Load) -> Iterator[None]:
    for name in list(_CONFIG_MODULES):
        _forget_module(name)
    finder = _ConfigFinder(load)
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
