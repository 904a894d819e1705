"""Rules for option values, each written once, beside the class that takes the option.

    RULES = (Rule("model.lr", positive, "must be a positive number"), ...)
    enforce(RULES, lr=lr)          # the constructor: a ValueError naming every broken rule
    problems(RULES, value_of)      # `fit`: the whole resolved config, before anything is scanned or built

The classes enforce their own table; `training/config_checks.py` runs every table against the config up
front, so a bad value costs nothing and both paths say the same words. Standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


@dataclass(frozen=True)
class Rule:
    key: str  # the option as users write it, e.g. "model.lr" or "data.augment.zoom"
    holds: Callable[[Any], bool]
    must: str  # what a value must be, e.g. "must be a positive number"
    hint: Callable[[Any], str] | None = None  # more about a value that fails, e.g. " (did you mean ...?)"

    @property
    def name(self) -> str:
        """The argument the rule's class takes (the key's last part)."""
        return self.key.rsplit(".", 1)[-1]

    def problem(self, value: Any) -> str | None:
        try:
            ok = bool(self.holds(value))
        except (TypeError, ValueError):  # e.g. a number compared with a string
            ok = False
        if ok:
            return None
        try:
            more = self.hint(value) if self.hint else ""
        except (TypeError, ValueError):
            more = ""
        return f"{self.key} {self.must}, got {value!r}{more}"


def problems(rules: Iterable[Rule], value_of: Callable[[str], Any], missing: Any = None) -> list[str]:
    """One message per broken rule; `value_of(key)` returning `missing` skips the rule."""
    out = []
    for rule in rules:
        value = value_of(rule.key)
        if value is not missing:
            found = rule.problem(value)
            if found:
                out.append(found)
    return out


def enforce(rules: Iterable[Rule], **values: Any) -> None:
    """Raise ValueError naming every rule of `rules` that the given arguments break."""
    broken = problems([r for r in rules if r.name in values], lambda key: values[key.rsplit(".", 1)[-1]],
                      missing=object())
    if broken:
        raise ValueError("; ".join(broken))


# -------------------------------------------------------------------- predicates the tables share


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive(v: Any) -> bool:
    return number(v) and v > 0


def non_negative(v: Any) -> bool:
    return number(v) and v >= 0


def fraction(v: Any) -> bool:
    """In [0, 1)."""
    return number(v) and 0 <= v < 1


def probability(v: Any) -> bool:
    """In [0, 1]."""
    return number(v) and 0 <= v <= 1


def whole(low: int, high: int) -> tuple[Callable[[Any], bool], str]:
    """A rule half: `Rule(flag, *whole(1, 12))` for an integer option from `low` to `high`."""
    return (lambda v: integer(v) and low <= v <= high), f"must be an integer from {low:,} to {high:,}"


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def rgb_triple(v: Any) -> bool:
    return len(v) == 3 and all(number(x) for x in v)


def ordered_pair(low: float, high: float) -> Callable[[Any], bool]:
    """(a, b) with low < a <= b <= high."""
    return lambda v: len(v) == 2 and all(number(x) for x in v) and low < v[0] <= v[1] <= high


def value_at(config: Any, key: str, missing: Any = None) -> Any:
    """`config["a"]["b"]` for key "a.b" in nested mappings or namespaces (`missing` where a part is absent)."""
    node = config
    for part in key.split("."):
        if node is None:
            return missing
        if isinstance(node, Mapping) or hasattr(node, "get"):
            node = node.get(part, missing)
        else:
            node = getattr(node, part, missing)
        if node is missing:
            return missing
    return node
