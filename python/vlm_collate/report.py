"""The batch a collate call returns, and its report: what it dropped, cut and labelled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import BatchFeature


@dataclass
class BatchReport:
    """A small account of one collate call, attached to its batch as ``batch.report``.

    ``dropped`` pairs the input index of each removed sample with the reason;
    ``unlabeled`` lists input indices of samples kept with zero target tokens;
    ``truncated`` lists input indices of samples cut to ``max_length``; ``row_ids`` holds
    per input sample the identity of its dataset row (``id``, ``idx``, ``__key__`` or
    ``__index__``, see :func:`~vlm_collate.with_row_index`), None where it carries none.
    """

    samples: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)
    unlabeled: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)
    target_tokens: int = 0
    exact_rows: list[int] = field(default_factory=list)
    """Input indices of samples the marker path could not vouch for (a header typed in
    user text, a turn the template drops, a cut row), labelled by the exact path."""
    row_ids: list[Any] = field(default_factory=list)
    shrunk: list[tuple[int, int]] = field(default_factory=list)
    """``(input index, max_pixels)`` of each sample whose images were shrunk to fit
    ``max_length`` (``shrink_media=True``), with the cap its images got."""

    def row(self, index: int) -> Any:
        """The dataset row of input sample ``index`` (its identity), or None."""
        return self.row_ids[index] if 0 <= index < len(self.row_ids) else None

    @property
    def dropped_rows(self) -> list[tuple[Any, str]]:
        """``dropped`` with each sample named by its row identity where it has one."""
        return [(self._name(i), reason) for i, reason in self.dropped]

    def _name(self, index: int) -> Any:
        row = self.row(index)
        return index if row is None else row

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
            + (f" (dropped rows: {[r for r, _ in self.dropped_rows]})" if self.dropped else "")
        )


class Batch(BatchFeature):
    """The tensors a model's ``forward`` takes (a transformers ``BatchFeature``: a
    mapping with ``.to(device)``), with a ``report``."""

    report: BatchReport

    def __init__(
        self, data: dict[str, Any] | None = None, report: BatchReport | None = None
    ) -> None:
        super().__init__(data)
        self.report = report if report is not None else BatchReport()

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "report": self.report}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]
        self.skip_tensor_conversion = None
        self.report = state.get("report") or BatchReport()
