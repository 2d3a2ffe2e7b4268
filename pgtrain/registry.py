"""Registry: an index from names to plain callables, for picking components by name in configs."""

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from pgtrain.config.lazy_call import check_arguments
from pgtrain.errors import RegistryError
from pgtrain.utils.suggest import did_you_mean

__all__ = ["Registry"]

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """Maps names to callables that take explicit keyword arguments.

    Register with a decorator (``@BACKBONES.register()`` or ``@BACKBONES.register("name")``) or a
    call (``BACKBONES.register("name", obj)``). Registering the same object again under its name is
    harmless (modules may be imported twice); a different object under a taken name is an error.

    Args:
        name: the registry's name, used in messages (e.g. "BACKBONES").
        hint: where entries come from, shown when a name is missing (e.g. "import
            pgtrain.modeling to register the built-in backbones").
    """

    def __init__(self, name: str, hint: str = "") -> None:
        self._name = name
        self._hint = hint
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None, obj: T | None = None) -> Any:
        """Registers `obj` under `name` (default: its ``__name__``); without `obj`, a decorator."""
        if obj is not None:
            self._add(name or obj.__name__, obj)
            return obj

        def decorator(fn: T) -> T:
            self._add(name or fn.__name__, fn)
            return fn

        return decorator

    def _add(self, name: str, obj: Callable[..., Any]) -> None:
        old = self._entries.get(name)
        if old is not None and old is not obj:
            raise RegistryError(
                f"{self._name}: the name '{name}' is taken by {_qualname(old)}; "
                f"register {_qualname(obj)} under another name"
            )
        self._entries[name] = obj

    def get(self, name: str) -> Callable[..., Any]:
        """Returns the callable registered as `name`, or raises with close names and known names."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            hint = f" ({self._hint})" if self._hint else ""
            suggestion = did_you_mean(name, self._entries)
            sep = " " if suggestion else ". "
            raise RegistryError(
                f"No '{name}' in {self._name}{suggestion}{sep}Known: {known}{hint}"
            ) from None

    def build(
        self, name: str, kwargs: Mapping[str, Any], *, where: str = "", kind: str = ""
    ) -> Any:
        """Calls the entry `name` with `kwargs`, after checking that it takes them.

        Args:
            name: the registered name.
            kwargs: its keyword arguments.
            where: the config key of the call, for messages (e.g. ``model.backbone``).
            kind: what an entry is called in messages (e.g. ``backbone``); default the registry's
                name.

        Raises:
            RegistryError: no entry of that name (with close and known names).
            ConfigError: an unknown or missing argument (with close names).
        """
        fn = self.get(name)
        check_arguments(fn, kwargs, where, owner=f"{kind or self._name} '{name}'")
        return fn(**kwargs)

    def names(self) -> list[str]:
        """Returns the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, Callable[..., Any]]]:
        return iter(sorted(self._entries.items()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, names={self.names()})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
