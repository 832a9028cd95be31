"""The batch report: what a collate call dropped, cut and labelled."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchReport:
    """A small account of one collate call, attached to its batch as ``batch.report``.

    ``dropped`` pairs the input index of each removed sample with the reason;
    ``unlabeled`` lists input indices of samples kept with zero target tokens;
    ``truncated`` lists input indices of samples cut to ``max_length``.
    """

    samples: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)
    unlabeled: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)
    target_tokens: int = 0

    @property
    def kept(self) -> int:
        """Samples in the batch."""
        return self.samples - len(self.dropped)

    def summary(self) -> str:
        """One compact log line."""
        return (
            f"batch: {self.kept}/{self.samples} samples, {self.target_tokens} target tokens, "
            f"{len(self.dropped)} dropped, {len(self.unlabeled)} unlabeled, "
            f"{len(self.truncated)} truncated"
        )


class Batch(dict):
    """A dict of tensors (what a model's ``forward`` takes) with a ``report``."""

    report: BatchReport

    def __init__(self, *args, report: BatchReport | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.report = report if report is not None else BatchReport()
