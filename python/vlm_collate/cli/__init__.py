"""The ``vlm-collate`` command line: ``inspect``, ``check``, ``demo`` and ``bench``, the
token view of a batch (terminal and HTML, its CSS/JS in ``assets/``), and data readers."""

from .commands import main

__all__ = ["main"]
