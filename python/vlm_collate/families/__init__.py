"""The model families: one short module each, registering its collate function with
:func:`~vlm_collate.processor.family.family` and declaring only what differs from the
shared encode step (:mod:`vlm_collate.pipeline.encode`). Importing this package
registers every family."""

import importlib

NAMES = (
    "default",
    "gemma3",
    "gemma4",
    "glm4v",
    "idefics3",
    "internvl",
    "kimi_k25",
    "kimi_vl",
    "llama4",
    "llava_onevision",
    "mllama",
    "nemotron_parse",
    "phi4_mm",
    "pixtral",
    "qwen2_5_vl",
    "qwen3_omni",
)
"""Every family module, in registration order."""

MODULES = tuple(importlib.import_module(f".{name}", __name__) for name in NAMES)
"""The family modules themselves (importing them registers each family)."""
