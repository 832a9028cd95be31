"""``check_template``: how labels will be built for a processor's chat template, before training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .closing import reply_closing
from .markers import PROBES, LabelsPlan, labels_plan
from .profile import profile_of
from .render import renderer_for


@dataclass(frozen=True)
class TemplateReport:
    """What :func:`check_template` found.

    ``method``: ``"markers"`` (the fast path: markers verified on every probe shape the
    template renders) or ``"exact"`` (each conversation labelled by differential
    rendering). ``headers``/``ends``: the derived markers as text. ``verified``: probe
    shapes whose marker labels equal the differential ground truth; ``failed``: those
    where they differ; ``refused``: shapes the template raises on (with its message);
    ``unrendered``: shapes whose reply the template drops or writes as a Python literal
    (such replies cannot be labelled). ``content_forms``: per role (system, user,
    assistant) the content forms the template renders (``"string"``, ``"list"``; the
    first is the one given to it when a message's own form is not rendered: a form the
    template drops or prints as a Python literal counts as not rendered). ``closing``: what
    closes each reply, mid-conversation and last (the template's own end-of-turn token, or
    the stop token the collators append after the last reply, ``close_last_reply``)."""

    template: str
    method: str
    headers: list[str]
    ends: list[str]
    verified: list[str]
    failed: list[str]
    refused: dict[str, str]
    unrendered: list[str]
    reason: str
    content_forms: dict[str, list[str]] = field(default_factory=dict)
    closing: str = ""

    def __str__(self) -> str:
        lines = [f"chat template: {self.template}"]
        if self.method == "markers":
            lines.append(
                f"labels: markers, verified on {len(self.verified)} of {len(PROBES)} probe "
                "shapes (fast path)"
            )
        else:
            lines.append(
                f"labels: exact path, differential rendering per conversation ({self.reason})"
            )
        if self.headers:
            lines.append("assistant headers: " + ", ".join(repr(h) for h in self.headers))
            lines.append("end-of-turn: " + ", ".join(repr(e) for e in self.ends))
        if self.content_forms:
            lines.append(
                "content forms rendered: "
                + "; ".join(f"{r}: {' or '.join(f)}" for r, f in self.content_forms.items())
            )
        if self.closing:
            lines.append("closing: " + self.closing)
        lines.append("verified shapes: " + ("; ".join(self.verified) or "none"))
        if self.failed:
            lines.append("shapes the markers mislabel (exact path used): " + "; ".join(self.failed))
        for name, why in self.refused.items():
            lines.append(f"shape the template refuses: {name} ({why})")
        if self.unrendered:
            lines.append(
                "shapes whose reply the template does not render (not labelled): "
                + "; ".join(self.unrendered)
            )
        return "\n".join(lines)


def _describe(processor: Any) -> str:
    template = getattr(processor, "chat_template", None)
    name = getattr(processor, "name_or_path", "") or type(processor).__name__
    size = len(template) if isinstance(template, str) else 0
    return f"{name} ({type(processor).__name__}, {size} characters)"


def report_of(processor: Any, plan: LabelsPlan) -> TemplateReport:
    """The report of a labels plan, markers decoded to text."""
    tokenizer = profile_of(processor).tokenizer
    markers = plan.markers

    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)

    return TemplateReport(
        template=_describe(processor),
        method=plan.method,
        headers=[text(s) for s in markers.starts] if markers else [],
        ends=[text(e) for e in markers.ends] if markers else [],
        verified=list(plan.verified),
        failed=list(plan.failed),
        refused=dict(plan.refused),
        unrendered=list(plan.unrendered),
        reason=plan.reason,
        content_forms=content_forms(processor),
        closing=reply_closing(processor).describe(),
    )


def content_forms(processor: Any) -> dict[str, list[str]]:
    """Per role, the content forms ``processor``'s template renders, the one used first."""
    renderer = renderer_for(processor)
    return {
        role: [form, *sorted(renderer.accepts.get(role, frozenset()) - {form})]
        for role, form in renderer.forms.items()
    }


def check_template(processor_or_tokenizer: Any) -> TemplateReport:
    """How labels will be built for ``processor_or_tokenizer``'s chat template: markers
    derived from probe conversations and verified against differential rendering (the
    fast path), or the exact path; which probe shapes were verified, and any turn shape
    the template refuses or does not render. ``print()`` it for a summary.

    Raises :class:`~vlm_collate.errors.TemplateError` when the template renders no
    assistant reply at all."""
    return report_of(processor_or_tokenizer, labels_plan(processor_or_tokenizer))
