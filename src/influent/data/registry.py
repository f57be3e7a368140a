"""`Registry`: the one lookup table of named things (methods, solvers, targets, strategies, suites).

Every entry is an object with a ``name`` (and usually a ``title`` and a one-sentence ``summary``); the
registry keeps them in registration order and looks them up by name. An unknown name is the one-line
``unknown <kind> 'x'; choose one of [...]`` `InputError` (`validate.unknown_name`, the one wording of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from .validate import InputError, unknown_name

T = TypeVar("T")


class UnknownName(InputError, KeyError):
    """A name the registry does not hold (an `InputError`, and a `KeyError` for mapping code)."""

    __str__ = InputError.__str__


@dataclass(frozen=True)
class Entry:
    """A registered callable or class with the names a person reads; calling the entry calls `obj`.

    Parameters
    ----------
    name : the registry name ("cg", "entropy", ...)
    obj : the function or class the name stands for (``inspect.signature(entry)`` is that of `obj`)
    title : the name a person reads (default: `name`)
    summary : one sentence saying what it is (default: the first sentence of `obj`'s docstring)
    """

    name: str
    obj: Any = None
    title: str = ""
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name)
        if not self.summary and self.obj is not None:
            object.__setattr__(self, "summary", first_sentence(self.obj.__doc__))
        if self.obj is not None:
            object.__setattr__(self, "__wrapped__", self.obj)  # signature and docs of the registered object

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.obj(*args, **kwargs)


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line ("" for none): up to the first ".",
    "!" or "?" ending a word and followed by a space and a capital, a bracket or a backquote (a new sentence),
    else the whole paragraph; "e.g." and "i.e." do not end a sentence."""
    import re

    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    for m in re.finditer(r"(?<=\S)[.!?](?=\s+[A-Z`(\[])", para):  # not " . " (a dot product)
        if not para[:m.end()].endswith(("e.g.", "i.e.", "cf.", "et al.")):
            return para[:m.end()]
    return para


class Registry(Mapping, Generic[T]):
    """Named entries of one kind, in registration order; a read-only mapping name -> entry.

    Parameters
    ----------
    kind : what the entries are, for messages ("method", "solver", ...)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, entry: T) -> T:
        """Register `entry` under ``entry.name`` (a name registered twice is a programming error)."""
        name = getattr(entry, "name")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str, make: Callable[..., T] | None = None, **fields: Any) -> Callable:
        """A decorator: ``@REG.register("x", title=...)`` adds ``make("x", obj, **fields)`` (default `Entry`)
        for the decorated function or class, and returns it unchanged."""
        def deco(obj):
            self.add((make or Entry)(name, obj, **fields))
            return obj
        return deco

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(unknown_name(self.kind, name, self.names())) from None

    def check(self, name: str) -> str:
        """`name` if registered, else the one-line `InputError` with the choices."""
        self[name]
        return name

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """The registered names (those whose entry satisfies `where`), in registration order."""
        return [k for k, v in self._entries.items() if where is None or where(v)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


__all__ = ["Entry", "Registry", "UnknownName", "first_sentence"]
