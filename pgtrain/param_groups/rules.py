"""Rules: which parameters (selectors) get which hyperparameters (settings).

A rule is a plain mapping, so configs round-trip through YAML::

    {"match": "roi_heads.*_predictor.*", "lr_mult": 10, "group": "heads"}
    {"module": "norm", "weight_decay": 0.0}
    {"fresh": True, "lr_mult": 10}

Selectors (a rule needs at least one; a parameter must satisfy all of them; name selectors also
test a tied parameter's other names):

{selectors}

Settings:

{settings}

Precedence: ``lr = (last absolute lr, else the base lr) x product of every lr_mult``, the same for
``weight_decay`` with ``wd_mult``. ``id`` names the rule in reports (default ``rules[i]``);
``optional: True`` allows a rule to match nothing (otherwise an error).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgtrain.errors import ConfigError
from pgtrain.param_groups.selectors import SELECTORS, selector_reference
from pgtrain.param_groups.settings import (
    OPTIMIZER_OPTION,
    SETTINGS,
    optimizer_keys,
    setting_reference,
)
from pgtrain.utils.suggest import did_you_mean

if __doc__:  # the reference lists come from the tables (None under python -OO)
    __doc__ = __doc__.replace("{selectors}", selector_reference()).replace(
        "{settings}", setting_reference()
    )

__all__ = ["Rule", "parse_rules"]

_META_KEYS = ("id", "optional")


@dataclass(frozen=True)
class Rule:
    """One parsed rule: its selectors, its settings and how it shows in reports.

    Attributes:
        id: the rule's name in reports and errors (``rules[2]`` unless the rule sets ``id``).
        selectors: normalized selectors (patterns compiled, module types resolved), in the order
            of `SELECTORS`.
        settings: the hyperparameters the rule sets.
        spec: the rule as written, for messages.
        optional: whether matching no parameter is allowed.
    """

    id: str
    selectors: dict[str, Any]
    settings: dict[str, Any]
    spec: dict[str, Any] = field(repr=False)
    optional: bool = False

    def describe(self) -> str:
        """Returns ``id (selector=value, ...)``, the rule as reports show it."""
        shown = ", ".join(f"{k}={self.spec[k]!r}" for k in self.selectors)
        return f"{self.id} ({shown})"


def parse_rules(
    specs: Iterable[Mapping[str, Any] | Rule] | None, where: str = "rules"
) -> list[Rule]:
    """Validates and normalizes rules written as mappings (or already parsed `Rule` objects).

    Args:
        specs: the rules, in order; a generator is read once.
        where: the config key the rules come from, used in messages (``rules`` -> ``rules[2]``).

    Raises:
        ConfigError: a rule is not a mapping, has an unknown key (with did-you-mean), no selector,
            no setting, or a value of the wrong type.
    """
    if specs is None:
        return []
    if isinstance(specs, Mapping | str):
        raise ConfigError(f"{where} must be a list of rules (mappings), got {type(specs).__name__}")
    rules = []
    for i, spec in enumerate(specs):
        rules.append(spec if isinstance(spec, Rule) else _parse_rule(spec, f"{where}[{i}]"))
    return rules


def _parse_rule(spec: Any, where: str) -> Rule:
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where} must be a mapping such as {{'match': '*.bias', 'lr_mult': 2}}, got {spec!r}"
        )
    spec = {str(k): v for k, v in spec.items()}
    known = (*SELECTORS, *SETTINGS, *_META_KEYS, *optimizer_keys())
    for key in spec:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, known)} (selectors: "
                f"{', '.join(SELECTORS)}; settings: {', '.join(SETTINGS)} or an "
                "optimizer key such as betas, eps, momentum)"
            )
    selectors = {
        k: kind.parse(spec[k], f"{where}.{k}") for k, kind in SELECTORS.items() if k in spec
    }
    settings = {
        k: SETTINGS.get(k, OPTIMIZER_OPTION).parse(v, f"{where}.{k}")
        for k, v in spec.items()
        if k not in SELECTORS and k not in _META_KEYS
    }
    if not selectors:
        raise ConfigError(
            f"{where} has no selector; add one of {', '.join(SELECTORS)} "
            "(match='*' selects every parameter)"
        )
    if not settings:
        raise ConfigError(
            f"{where} sets nothing; add one of {', '.join(SETTINGS)} or an optimizer key"
        )
    rule_id = spec.get("id", where)
    optional = spec.get("optional", False)
    if not isinstance(rule_id, str) or not isinstance(optional, bool):
        raise ConfigError(f"{where}: 'id' must be a string and 'optional' a bool")
    return Rule(rule_id, selectors, settings, spec, optional)
