"""Names -> things of one kind: the one registry type of the package.

The network zoo (:data:`pebal_core.models.registry.MODELS`), the inference backends
(:data:`pebal_core.backends.BACKENDS`), the anomaly evaluation datasets
(:data:`pebal_core.data.anomaly_sets.ANOMALY_DATASETS`), the training modes
(:data:`pebal_core.training_modes.TRAINING_MODES`), the loss variants and abstentions
(:data:`pebal_core.losses.LOSS_VARIANTS`, :data:`pebal_core.losses.ABSTENTIONS`) and the ablation
rows (:data:`pebal_core.config.ABLATION_ROWS`) are each a :class:`Registry`: entries are added by name
(directly or as a decorator), looked up by name, and a name that is not there raises
:class:`UnknownNameError`, whose message lists the valid names and suggests the closest ones::

    >>> colours = Registry("colour")
    >>> colours.register("red", (255, 0, 0))
    (255, 0, 0)
    >>> colours["red"]
    (255, 0, 0)
    >>> colours["rde"]
    Traceback (most recent call last):
    ...
    pebal_core.registry.UnknownNameError: unknown colour 'rde' (did you mean 'red'?); available: red
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, overload

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a :class:`Registry`. Both a ``KeyError`` (a failed look-up) and a
    ``ValueError`` (a bad argument), so callers catching either keep working; ``str()`` is the
    message itself (a plain ``KeyError`` would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """An insertion-ordered mapping from names to entries of one ``kind`` (a word for messages:
    ``"model"``, ``"backend"``...). Entries cannot be replaced: registering a name twice is an
    error, so two modules cannot silently fight over a name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: object = None) -> object:
        """Add ``entry`` under ``name`` and return it; without ``entry``, a decorator that adds the
        decorated function or class."""
        if entry is None:
            return lambda decorated: self.register(name, decorated)
        if not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """The registered names, in the order they were registered."""
        return list(self._entries)

    def unknown(self, name: str) -> UnknownNameError:
        """The error for ``name``: the valid names, and the closest ones when ``name`` looks like a typo."""
        close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return UnknownNameError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self._entries)}")

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
