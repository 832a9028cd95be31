"""The family table: each model family registers its collate function with the processor
classes and model types it serves and the profile facts it overrides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

CollateFn = Callable[..., Any]


@dataclass(frozen=True)
class Family:
    """A registered family: its collate function, the processor class names and model
    types it serves, and its profile overrides (see :func:`..profile.with_overrides`)."""

    name: str
    collate_fn: CollateFn
    processor_classes: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    profile: Mapping[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {}
"""Family name -> declaration, in registration order."""


def family(
    name: str,
    *,
    classes: tuple[str, ...] = (),
    model_types: tuple[str, ...] = (),
    profile: Mapping[str, Any] | None = None,
) -> Callable[[CollateFn], CollateFn]:
    """Decorator registering a collate function as family ``name`` for processors of
    ``classes`` (or a subclass) and of ``model_types``; ``profile``: the facts the
    family declares instead of the derived ones."""

    def register(collate_fn: CollateFn) -> CollateFn:
        FAMILIES[name] = Family(name, collate_fn, tuple(classes), tuple(model_types), profile or {})
        return collate_fn

    return register


def model_type_of(processor: Any) -> str | None:
    """The model type a processor declares (its own ``model_type``, or its config's)."""
    for owner in (processor, getattr(processor, "config", None)):
        value = getattr(owner, "model_type", None)
        if isinstance(value, str):
            return value
    return None


def family_of(processor: Any) -> Family | None:
    """The family serving ``processor``'s class or its nearest registered base class,
    else the model type it declares; None when neither is registered."""
    by_class = {c: f for f in FAMILIES.values() for c in f.processor_classes}
    for cls in type(processor).__mro__:
        if cls.__name__ in by_class:
            return by_class[cls.__name__]
    model_type = model_type_of(processor)
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def profile_overrides(processor: Any) -> dict[str, Any]:
    """The profile facts ``processor``'s family declares (none for unknown processors)."""
    found = family_of(processor)
    return dict(found.profile) if found is not None else {}
