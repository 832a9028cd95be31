"""Tiled fast paths: the families whose processors cut each image into tiles (InternVL,
LLaVA-OneVision, Idefics3/SmolVLM, Pixtral, Llama 3.2 Vision, Llama 4).

Each family has one module here, named as the family (``internvl.py`` ...), with a
``plan(profile)`` that returns its :class:`~.base.TilePlan` or the reason (a string) the
fast path does not reproduce that processor. A plan declares only what differs (the
resizes and windows of each image, the text that replaces its placeholder, the output
keys); :mod:`vlm_collate.pipeline.fast_tiles` runs the one encode step they share and the
engine writes every tile in one pass (``engine.write_tiles``).
"""

from __future__ import annotations

import importlib
import logging

from ..profile import ProcessorProfile, profile_of
from .base import ImageTiles, TilePlan

logger = logging.getLogger("vlm_collate")

__all__ = ["ImageTiles", "TilePlan", "has_tile_plan", "tile_plan"]


def _module(profile: ProcessorProfile):  # type: ignore[no-untyped-def]
    family = profile.family
    if family is None:
        return None
    try:
        return importlib.import_module(f"{__name__}.{family.name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{family.name}":
            raise
        return None


def has_tile_plan(processor: object) -> bool:
    """Whether the processor's family is a tiled family (whatever its settings)."""
    return _module(profile_of(processor)) is not None


def _plan(profile: ProcessorProfile) -> TilePlan | None:
    module = _module(profile)
    if module is None:
        return None
    plan = module.plan(profile)
    if isinstance(plan, str):
        logger.info(
            "fast path off for %s: %s; using the processor call",
            type(profile.processor).__name__,
            plan,
        )
        return None
    return plan


def tile_plan(processor: object) -> TilePlan | None:
    """The tiled fast path's plan for ``processor`` (or its profile), decided once and kept
    on the profile, or None (not a tiled family, or settings it does not reproduce: the
    reason logged once)."""
    profile = profile_of(processor)
    return profile.cached("tile_plan", lambda: _plan(profile))
