"""A name -> factory registry that fails loudly on an unknown name.

Optimizers, learning-rate schedules, augmentation presets, heads, dataset layouts and
ensemble methods are each a :class:`Registry`, so every variant is chosen by name and a typo
lists the valid names instead of being silently ignored (timm's optimizer registry does the
same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from trainers.errors import WenError

T = TypeVar("T")


class UnknownNameError(WenError, KeyError, ValueError):
    """An unknown registry name; the message lists every valid name."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects of one kind.

    >>> colours = Registry("colour", key="data.colour")
    >>> _ = colours.register("red")(lambda: "#f00")
    >>> colours.get("red")()
    '#f00'
    >>> colours.get("blue")
    Traceback (most recent call last):
    ...
    trainers._registry.UnknownNameError: unknown colour 'blue' in data.colour; valid names: red
    """

    def __init__(self, kind: str, key: str = "") -> None:
        self.kind = kind
        self.key = key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        where = f" in {self.key}" if self.key else ""
        return f"unknown {self.kind} {name!r}{where}; valid names: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
