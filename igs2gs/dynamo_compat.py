"""Work-arounds for dynamo's AOT compile of modules (igs2gs/saved_compile.py) in the torch versions we run on.

A saved compiled module pickles its guards, and with them each guard's source: `torch._guards.Source` and its
dataclass subclasses. torch 2.11 reduces a source to its class and the values of all its dataclass fields, including
those that `__post_init__` computes (`init=False`, such as `DefaultsSource.field`). Unpickling then calls the class
with too many arguments, and the saved piece does not load ("DefaultsSource.__init__() takes from 3 to 4 positional
arguments but 6 were given", on the lent H200s). Newer torch passes only the constructor's fields, as
`sources_pickle_their_init_fields` does while a piece is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator


def with_subclasses(cls: type) -> list[type]:
    """`cls` and all its subclasses, however deep."""
    found, todo = [], [cls]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(current.__subclasses__())
    return found


def _reduce_to_init_fields(source: Any) -> tuple[type, tuple[Any, ...]]:
    """A source as its class and the values of the fields its constructor takes."""
    return type(source), tuple(getattr(source, f.name) for f in dataclasses.fields(source) if f.init)


@contextlib.contextmanager
def sources_pickle_their_init_fields() -> Iterator[None]:
    """While inside, every guard source that defines its own `__reduce__` pickles only its constructor's fields."""
    from torch._guards import Source

    replaced: list[tuple[type, Callable[..., Any]]] = []
    for cls in with_subclasses(Source):
        reduce = vars(cls).get("__reduce__")
        if reduce is not None and dataclasses.is_dataclass(cls):
            replaced.append((cls, reduce))
            cls.__reduce__ = _reduce_to_init_fields  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for cls, reduce in replaced:
            cls.__reduce__ = reduce  # type: ignore[method-assign]
