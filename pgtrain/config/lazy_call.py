"""LazyCall and instantiate: configs that describe calls, and turning them into objects."""

import contextlib
import functools
import importlib
import inspect
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pgtrain.config.hints import annotated_checks, hint_problem
from pgtrain.errors import ConfigError, PgtrainError, first_line
from pgtrain.utils.suggest import did_you_mean

__all__ = [
    "LazyCall",
    "accepts_keyword",
    "check_arguments",
    "check_calls",
    "instantiate",
    "locate",
    "signature_keywords",
    "target_name",
]

TARGET = "_target_"
PARTIAL_ARGS = "_args_"  # the positional arguments of a `functools.partial` node


class LazyCall:
    """Records a call instead of making it: ``LazyCall(SGD)(lr=0.1)`` is a config node.

    The node is a DictConfig ``{"_target_": SGD, "lr": 0.1}`` that can be edited, saved to YAML
    (the target becomes its import path) and turned into the object by `instantiate`. Only keyword
    arguments are accepted, so every argument has a name a command line can override.
    """

    def __init__(self, target: Callable[..., Any] | str) -> None:
        if not (callable(target) or isinstance(target, str)):
            raise ConfigError(f"LazyCall needs a callable or an import path, got {target!r}")
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> DictConfig:
        if args:
            raise ConfigError(
                f"LazyCall({target_name(self._target)}) takes keyword arguments only, so each "
                "can be named on the command line"
            )
        return DictConfig({TARGET: self._target, **kwargs}, flags={"allow_objects": True})


def target_name(target: Any) -> str:
    """Returns the import path of a callable (``torch.optim.sgd.SGD``), or the string itself."""
    if isinstance(target, str):
        return target
    if isinstance(target, functools.partial):
        return target_name(target.func)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if module is None or qualname is None or "<" in qualname:
        raise ConfigError(
            f"{target!r} has no import path (lambdas and local functions cannot be saved); "
            "use a module-level function or functools.partial"
        )
    if not _resolves(module, qualname, target):
        # torch's C functions: torch.zeros has the qualname _VariableFunctionsClass.zeros
        name = getattr(target, "__name__", None)
        if isinstance(name, str) and _resolves(module, name, target):
            return f"{module}.{name}"
    return f"{module}.{qualname}"


def _resolves(module: str, qualname: str, target: Any) -> bool:
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj is target or (callable(obj) and obj == target)


def locate(name: str) -> Any:
    """Imports the object at a dotted path (``torch.optim.SGD``) or raises a ConfigError.

    The longest importable module prefix is imported, the rest are attributes (so nested classes
    and objects that packages re-export under another name are found too).
    """
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                raise  # the module exists but one of its own imports is missing
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    moved = _moved(name)
    if moved != name:  # a config.yaml saved before pgtrain's modules moved
        with contextlib.suppress(ConfigError):
            return locate(moved)
    module, _, attr = name.rpartition(".")
    raise ConfigError(
        f"cannot import '{name}': check the spelling and that module '{module}' is importable "
        f"and defines '{attr}'"
    )


# pgtrain's modules that moved, old path -> new path, so that a config.yaml an earlier pgtrain
# saved (it names each callable by the module defining it) still loads.
_MOVED_MODULES = {
    "pgtrain.solver.lr_scheduler": "pgtrain.solver.schedules.lr_multiplier",
    "pgtrain.solver.param_schedulers": "pgtrain.solver.schedules.param_schedulers",
    "pgtrain.solver.schedule_units": "pgtrain.solver.schedules.units",
    "pgtrain.solver.schedules": "pgtrain.solver.schedules.registry",
    "pgtrain.param_groups.layer_decay": "pgtrain.param_groups.builders.layer_decay",
    "pgtrain.param_groups.muon": "pgtrain.param_groups.builders.muon",
    "pgtrain.param_groups.builders": "pgtrain.param_groups.builders.rules",
    "pgtrain.engine.trainer": "pgtrain.engine.loop.trainer",
    "pgtrain.engine.hook_base": "pgtrain.engine.loop.hook_base",
    "pgtrain.engine.hooks": "pgtrain.engine.hooks.basic",
    "pgtrain.engine.ema": "pgtrain.engine.hooks.ema",
    "pgtrain.engine.param_group_stats": "pgtrain.engine.hooks.param_group_stats",
    "pgtrain.engine.periodic_checkpointer": "pgtrain.engine.hooks.checkpoint",
    "pgtrain.engine.launch": "pgtrain.engine.processes.launch",
    "pgtrain.engine.preemption": "pgtrain.engine.processes.preemption",
    "pgtrain.engine.slurm": "pgtrain.engine.processes.slurm",
    "pgtrain.engine.parallel": "pgtrain.engine.strategy.fsdp",
    "pgtrain.engine.ddp": "pgtrain.engine.strategy.ddp",
    "pgtrain.engine.compile": "pgtrain.engine.strategy.compile",
    "pgtrain.engine.run": "pgtrain.engine.run.build",
    "pgtrain.engine.run_length": "pgtrain.engine.run.length",
    "pgtrain.engine.settings": "pgtrain.engine.run.settings",
    "pgtrain.engine.defaults": "pgtrain.engine.run.entry",
}


def _moved(name: str) -> str:
    """`name` under the module path it has now, when its module is one that moved."""
    module, _, attr = name.rpartition(".")
    new = _MOVED_MODULES.get(module)
    return f"{new}.{attr}" if new else name


def instantiate(cfg: Any, _path: str = "") -> Any:
    """Builds the objects a config describes, depth first; other values are returned as they are.

    Every mapping with a ``_target_`` is called with its other keys as keyword arguments (their
    values instantiated first). Errors name the config key where they happened, e.g.
    ``model.backbone: unexpected keyword 'dpth'; did you mean 'depth'?``.
    """
    if isinstance(cfg, ListConfig | Sequence) and not isinstance(cfg, str):
        return [instantiate(v, _join(_path, str(i))) for i, v in enumerate(cfg)]
    if not isinstance(cfg, DictConfig | Mapping):
        return cfg
    keys = list(cfg.keys())
    if TARGET not in keys:
        return {k: instantiate(_get(cfg, k, _path), _join(_path, str(k))) for k in keys}
    target = _get(cfg, TARGET, _path)
    fn = locate(target) if isinstance(target, str) else target
    kwargs = {
        k: instantiate(_get(cfg, k, _path), _join(_path, str(k))) for k in keys if k != TARGET
    }
    call = _partial if fn is functools.partial else fn  # its `func` is positional only
    check_arguments(call, kwargs, _path, owner=target_name(fn))
    try:
        return call(**kwargs)
    except PgtrainError as e:
        # A user error from the call (a registry miss, a bad value): keep its type, name the key.
        if _path and not str(e).startswith(_path):
            raise type(e)(f"{_path}: {e}") from e
        raise
    except Exception as e:
        # Name the key; keep the original exception type's message (one line is enough).
        raise ConfigError(
            f"{_path or 'config'}: {target_name(fn)}(...) failed: {type(e).__name__}: {e}"
        ) from e


def check_calls(cfg: Any, _path: str = "") -> None:
    """Checks every call a config describes, calling nothing: each keyword is one the callable
    takes and each value written in the config fits its type hint (see `check_arguments`).

    A value that is an interpolation (``${..lr}``) is checked where it is written; a callable
    that hands its keywords on to one it looks up by name declares a ``dispatch(kwargs)``
    returning ``(callable, keywords, how to name it)`` (``build_param_groups`` and its builder).

    Raises:
        ConfigError: naming the config key, the value and what it must be.
        RegistryError: a registry name that is not registered.
    """
    if isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            check_calls(item, _join(_path, str(i)))
        return
    if not isinstance(cfg, DictConfig):
        return
    for key in cfg.keys():  # first this node's own interpolations: checked where they point,
        if _is_interpolation(cfg, key):  # but they must resolve
            _get(cfg, key, _path)
    for key in cfg.keys():
        if not _is_interpolation(cfg, key):
            check_calls(cfg._get_node(key), _join(_path, str(key)))
    if TARGET not in cfg:
        return
    target = _get(cfg, TARGET, _path)
    try:
        fn = locate(target) if isinstance(target, str) else target
    except ConfigError as e:
        raise ConfigError(f"{_join(_path, TARGET)}: {e}") from e
    kwargs = {
        str(k): _plain(cfg, k, _path)
        for k in cfg.keys()
        if k != TARGET and not _is_interpolation(cfg, k) and not _has_call(cfg._get_node(k))
    }
    owner = None
    if hasattr(fn, "dispatch"):
        try:
            fn, kwargs, owner = fn.dispatch(kwargs)
        except PgtrainError as e:  # e.g. a registry name that is not registered
            raise type(e)(f"{_path}: {e}") from e
    check_arguments(fn, kwargs, _path, owner=owner, values=True)


def _is_interpolation(cfg: DictConfig, key: Any) -> bool:
    return OmegaConf.is_interpolation(cfg, key)


def _has_call(node: Any) -> bool:
    if isinstance(node, DictConfig):
        return TARGET in node or any(_has_call(node._get_node(k)) for k in node.keys())
    if isinstance(node, ListConfig):
        return any(_has_call(node._get_node(i)) for i in range(len(node)))
    return False


def _plain(cfg: DictConfig, key: Any, path: str) -> Any:
    value = _get(cfg, key, path)
    if isinstance(value, DictConfig | ListConfig):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except Exception as e:  # an interpolation inside that does not resolve
            raise ConfigError(f"{_join(path, str(key))}: {first_line(e)}") from e
    return value


def _get(cfg: Any, key: Any, path: str) -> Any:
    try:
        return cfg[key]
    except Exception as e:  # omegaconf interpolation / missing-value errors
        msg = first_line(e)
        raise ConfigError(f"{_join(path, str(key))}: {msg}") from e


def signature_of(fn: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(fn)``, read once per callable: a builder or a schedule is checked
    each time it is built, and reading a signature costs more than most builds' own checks."""
    try:
        return _cached_signature(fn)
    except TypeError:  # an unhashable callable (or one without a signature: raised again)
        return inspect.signature(fn)


@functools.lru_cache(maxsize=1024)
def _cached_signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def signature_keywords(fn: Callable[..., Any]) -> tuple[list[str], bool] | None:
    """Returns (the keyword names `fn` takes, whether it also takes ``**kwargs``), or None when
    it has no signature to read (some builtins)."""
    try:
        params = signature_of(fn).parameters
    except (TypeError, ValueError):
        return None
    named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params.values())


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Says whether `fn` takes a keyword argument `name` (by name or through ``**kwargs``)."""
    found = signature_keywords(fn)
    return found is not None and (name in found[0] or found[1])


def check_arguments(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    path: str,
    *,
    owner: str | None = None,
    values: bool = False,
) -> None:
    """Raises a ConfigError naming `path` if `fn` cannot take `kwargs`: an unknown keyword (with
    close names and the ones it takes) or a missing required one; with `values`, also a value
    that does not fit its type hint (``optimizer.lr: 'fast' must be a number``), the check of a
    config before anything is built (arguments bound at run time may be missing then).

    The one argument check of configs, registries (`Registry.build`) and builders.

    Args:
        fn: the callable.
        kwargs: the keyword arguments it would get.
        path: the config key of the call, e.g. ``model.backbone`` (or "" for none).
        owner: how to name `fn` in the message (default: its import path).
        values: check the values (plain config values) against `fn`'s type hints, and do not
            require the arguments that are missing.
    """
    found = signature_keywords(fn)
    if found is None:
        return  # builtins without a signature: let the call itself complain
    accepted, takes_any = found
    who = owner or target_name(fn)
    where = f"{path}: " if path else ""
    if not takes_any:
        for key in kwargs:
            if key not in accepted:
                raise ConfigError(
                    f"{where}unexpected keyword '{key}' for {who}{did_you_mean(key, accepted)}"
                    f" (it takes: {', '.join(accepted)})"
                )
    if values:
        _check_values(fn, kwargs, path, who)
        return
    params = signature_of(fn).parameters
    missing = [
        n
        for n in accepted
        if params[n].default is inspect.Parameter.empty
        and n not in kwargs
        and params[n].kind is not inspect.Parameter.POSITIONAL_ONLY
    ]
    if missing:
        raise ConfigError(
            f"{where}{who} needs {', '.join(repr(m) for m in missing)}; "
            f"set {' and '.join(_join(path, m) for m in missing)}"
        )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """`fn`'s parameter type hints (a class's ``__init__``'s); {} where they cannot be read."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # hints naming what is not importable here, C functions: nothing to check
        return {}


def _check_values(fn: Callable[..., Any], kwargs: Mapping[str, Any], path: str, who: str) -> None:
    hints = type_hints(fn)
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is None:
            continue
        problem = hint_problem(value, hint)
        if problem:
            raise ConfigError(f"{_join(path, key)}: {value!r} must be {problem} ({who}'s {key})")
        for check in annotated_checks(hint):
            check(value, _join(path, key))


def _partial(func: Any, _args_: Sequence[Any] = (), **keywords: Any) -> functools.partial:
    """Builds ``functools.partial(func, *_args_, **keywords)``: how a saved partial is rebuilt."""
    return functools.partial(locate(func) if isinstance(func, str) else func, *_args_, **keywords)
