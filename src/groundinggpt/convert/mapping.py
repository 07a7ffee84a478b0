"""Rule-based key conversion that accounts for every source tensor.

A :class:`KeyRules` maps source keys to target keys with regular expressions, in order, first
match wins: a *rename* rule gives the new key, a *drop* rule gives the reason the tensor is not
used. A source key that no rule matches is *unknown*, which converters treat as an error: a
conversion never silently loses a tensor and never invents one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class Conversion:
    """Result of a conversion: the new tensors and where every source key went.

    Attributes:
        state: converted tensors, keyed by target key.
        sources: target key -> source key it came from.
        dropped: source key -> why it is not used.
        unknown: source keys no rule matched.
    """

    state: dict[str, torch.Tensor] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def update(self, other: Conversion) -> None:
        """Merge ``other`` in; a target key produced twice is an error."""
        clash = self.state.keys() & other.state.keys()
        if clash:
            raise ValueError(f"two source tensors map to {sorted(clash)[:3]}")
        self.state.update(other.state)
        self.sources.update(other.sources)
        self.dropped.update(other.dropped)
        self.unknown.extend(other.unknown)

    def check_complete(self, what: str) -> None:
        """Raise when some source key was matched by no rule."""
        if self.unknown:
            raise ValueError(
                f"{what}: {len(self.unknown)} keys of unknown layout, e.g. {self.unknown[:5]}"
            )

    def summary(self) -> str:
        """One line: converted / dropped (by reason) / unknown counts."""
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        dropped = "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items()))
        return (
            f"{len(self.state)} tensors converted, {len(self.dropped)} dropped "
            f"({dropped or 'none'}), {len(self.unknown)} unknown"
        )


Rule = tuple[str, str | None, str]  # (pattern, replacement or None to drop, drop reason)


class KeyRules:
    """Ordered regex rules: ``rename(pattern, repl)`` or ``drop(pattern, reason)``.

    Patterns are matched with :func:`re.match` (anchored at the start); replacements use
    :func:`re.Match.expand` syntax (``\\1``).

    Example:
        >>> rules = KeyRules().rename(r"model\\.norm\\.(.*)", r"llm.model.norm.\\1")
        >>> rules.apply({"model.norm.weight": torch.ones(2)}).sources
        {'llm.model.norm.weight': 'model.norm.weight'}
    """

    def __init__(self) -> None:
        self.rules: list[tuple[re.Pattern[str], str | None, str]] = []

    def rename(self, pattern: str, replacement: str) -> KeyRules:
        self.rules.append((re.compile(pattern), replacement, ""))
        return self

    def drop(self, pattern: str, reason: str) -> KeyRules:
        self.rules.append((re.compile(pattern), None, reason))
        return self

    def extend(self, other: KeyRules) -> KeyRules:
        self.rules.extend(other.rules)
        return self

    def target(self, key: str) -> tuple[str | None, str] | None:
        """``(new_key, "")``, ``(None, reason)`` or ``None`` when no rule matches."""
        for pattern, replacement, reason in self.rules:
            match = pattern.match(key)
            if match:
                return (
                    (match.expand(replacement), "") if replacement is not None else (None, reason)
                )
        return None

    def apply(
        self,
        state: Mapping[str, torch.Tensor],
        keys: Iterable[str] | None = None,
        transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> Conversion:
        """Convert ``keys`` of ``state`` (all keys by default)."""
        out = Conversion()
        for key in state if keys is None else keys:
            hit = self.target(key)
            if hit is None:
                out.unknown.append(key)
            elif hit[0] is None:
                out.dropped[key] = hit[1]
            else:
                if hit[0] in out.state:
                    raise ValueError(f"{out.sources[hit[0]]} and {key} both map to {hit[0]}")
                value = state[key]
                out.state[hit[0]] = transform(key, value) if transform else value
                out.sources[hit[0]] = key
        return out


__all__ = ["Conversion", "KeyRules"]
