"""Offline builders of real processors and tokenizers for tests, the demo and benchmarks
(``builders``: the Qwen2 vocabulary; ``standins``: Qwen3-Omni, Phi-4, Kimi, and test
stand-ins for remote-code processors, named ``...StandIn``; ``families``: transformers'
own processors of every other vision-language family; ``vocabularies``: real
vocabularies from PyPI packages). Nothing here touches the network."""

from . import families, vocabularies
from .builders import *  # noqa: F403
from .builders import __all__ as _builders_all
from .families import *  # noqa: F403
from .families import __all__ as _families_all
from .standins import *  # noqa: F403
from .standins import __all__ as _standins_all

__all__ = [*_builders_all, *_standins_all, *_families_all, "families", "vocabularies"]
