"""The family table: which registered family serves a processor, decided here only.

Each family module registers its collate function with :func:`family`, naming the
processor classes and model types it serves and the facts it declares instead of the
derived ones: profile overrides, the rotary-position family of each class or model
type, and whether the fast path reproduces its processor call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

CollateFn = Callable[..., Any]


@dataclass(frozen=True)
class Family:
    """A registered family: its collate function, the processor class names and model
    types it serves, its profile overrides (see
    :func:`~vlm_collate.processor.profile.with_overrides`), ``rope`` (processor class name
    or model type -> the rotary-position family the engine computes) and ``fast_path``
    (transformers' own classes of ``processor_classes`` are reproduced by the fast path)."""

    name: str
    collate_fn: CollateFn
    processor_classes: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    profile: Mapping[str, Any] = field(default_factory=dict)
    rope: Mapping[str, str] = field(default_factory=dict)
    fast_path: bool = False


FAMILIES: dict[str, Family] = {}
"""Family name -> declaration, in registration order."""


def family(
    name: str,
    *,
    classes: tuple[str, ...] = (),
    model_types: tuple[str, ...] = (),
    profile: Mapping[str, Any] | None = None,
    rope: Mapping[str, str] | None = None,
    fast_path: bool = False,
) -> Callable[[CollateFn], CollateFn]:
    """Decorator registering a collate function as family ``name`` for processors of
    ``classes`` (or a subclass) and of ``model_types`` (see :class:`Family`)."""

    def register(collate_fn: CollateFn) -> CollateFn:
        FAMILIES[name] = Family(
            name,
            collate_fn,
            tuple(classes),
            tuple(model_types),
            dict(profile or {}),
            dict(rope or {}),
            fast_path,
        )
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


def rope_family_of(processor: Any) -> str | None:
    """The rotary-position family of ``processor`` (by its class or nearest registered
    base class, else its model type), or None when its family declares none."""
    found = family_of(processor)
    if found is None or not found.rope:
        return None
    for cls in type(processor).__mro__:
        if cls.__name__ in found.rope:
            return found.rope[cls.__name__]
    return found.rope.get(model_type_of(processor) or "")


def rope_family_of_model_type(model_type: str | None) -> str | None:
    """The rotary-position family a model config of ``model_type`` has, or None."""
    return next(
        (f.rope[model_type] for f in FAMILIES.values() if model_type and model_type in f.rope),
        None,
    )


def rope_model_types() -> list[str]:
    """The model types whose rotary positions the engine computes."""
    return sorted(
        key for f in FAMILIES.values() for key in f.rope if key not in f.processor_classes
    )
