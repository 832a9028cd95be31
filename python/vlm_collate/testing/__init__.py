"""Offline builders of real processors and tokenizers for tests, the demo and benchmarks
(``builders``: the Qwen2 vocabulary; ``standins``: the other families, and test stand-ins
for remote-code processors, named ``...StandIn``). Nothing here touches the network."""

from .builders import *  # noqa: F403
from .builders import __all__ as _builders_all
from .standins import *  # noqa: F403
from .standins import __all__ as _standins_all

__all__ = [*_builders_all, *_standins_all]
