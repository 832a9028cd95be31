"""Which collate function a processor gets (the family table's one lookup,
:func:`~vlm_collate.processor.family.family_of`), and a DataLoader-ready collator."""

from __future__ import annotations

import inspect
from typing import Any

from . import families  # noqa: F401 - importing it registers every family
from .errors import OptionError
from .options import CollateOptions, as_dict, collate_options, unknown_options_error
from .processor.family import FAMILIES, CollateFn, family_of

COLLATE_FNS: dict[str, CollateFn] = {
    cls: f.collate_fn for f in FAMILIES.values() for cls in f.processor_classes
}
"""Processor class name -> collate function (the seed's keys and every registered
family's), and ``"default"`` for any other processor with a chat template."""
COLLATE_FNS["default"] = FAMILIES["default"].collate_fn


def get_collate_fn(processor: Any) -> CollateFn:
    """The collate function of the family serving ``processor`` (by its class or nearest
    registered base class, else its model type); ``default`` when none is registered."""
    found = family_of(processor)
    return (found or FAMILIES["default"]).collate_fn


def _own_parameters(collate_fn: CollateFn) -> tuple[list[str], bool]:
    """The keyword parameters of ``collate_fn`` after ``(examples, processor)``, and
    whether it takes ``**options``."""
    try:
        parameters = list(inspect.signature(collate_fn).parameters.values())[2:]
    except (TypeError, ValueError):
        return [], True
    named = [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "options"
    ]
    return named, any(p.kind == p.VAR_KEYWORD for p in parameters)


class VLMCollator:
    """``collate_fn`` for ``DataLoader`` and ``data_collator`` for a Hugging Face
    ``Trainer`` or TRL's ``SFTTrainer``: Hugging Face style batches (unshifted
    ``labels``; the model's loss shifts) unless ``shift=True`` is passed.

    ``options`` (a :class:`~vlm_collate.CollateOptions`) and keyword options are
    checked here, when the collator is built: an unknown name or a bad value is an
    :class:`~vlm_collate.errors.OptionError`. Keywords the collate function itself
    declares (``use_audio_in_video``, ``task_prompt``, ``pixel_dtype``) pass through.
    Holds the processor, the resolved collate function and the options; pickles for
    DataLoader workers started by spawn.
    """

    def __init__(
        self,
        processor: Any,
        collate_fn: CollateFn | str | None = None,
        *,
        options: CollateOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.processor = processor
        if isinstance(collate_fn, str):
            if collate_fn not in COLLATE_FNS:
                raise OptionError(
                    f"unknown collate function {collate_fn!r}; known: {sorted(COLLATE_FNS)}"
                )
            collate_fn = COLLATE_FNS[collate_fn]
        if collate_fn is not None and not callable(collate_fn):
            raise OptionError(
                f"collate_fn must be a function or a name in COLLATE_FNS, got {collate_fn!r}"
            )
        self.collate_fn: CollateFn = collate_fn or get_collate_fn(processor)
        own, takes_options = _own_parameters(self.collate_fn)
        shared_names = CollateOptions.names() if takes_options else ()
        if options is not None and not takes_options:
            raise OptionError(f"{self.collate_fn.__name__} takes no collate options")
        unknown = [k for k in kwargs if k not in shared_names and k not in own]
        if unknown:
            raise unknown_options_error(unknown, [*shared_names, *own])
        shared = {k: v for k, v in kwargs.items() if k in shared_names}
        if options is not None or shared or takes_options:
            if takes_options and options is None:  # Hugging Face style unless shift=True
                shared.setdefault("shift", CollateOptions.shift)
            checked = collate_options(options, **shared)  # validated now, not at the first batch
            explicit = as_dict(checked) if options is not None else shared
            shared = {k: getattr(checked, k) for k in explicit}
        self.options: dict[str, Any] = {**shared, **{k: v for k, v in kwargs.items() if k in own}}

    def __call__(self, examples: list) -> Any:
        return self.collate_fn(examples, self.processor, **self.options)

    def __repr__(self) -> str:
        name = type(self.processor).__name__
        return f"VLMCollator({name}, {self.collate_fn.__name__}, {self.options})"
