"""Nemotron-Parse: an encoder-decoder with no chat template; the decoder text is the
task prompt followed by the first assistant reply and the end token."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..engine import IGNORE_INDEX, as_int64
from ..errors import CollateError, OptionError, SampleError
from ..formats.conversation import Conversation, assistant_turns, extract_assistant_text
from ..options import dtype_option, seed_options
from ..pipeline.encode import Collected, Quirks, collate, loaded_media
from ..pipeline.layout import converted
from ..pipeline.media import SampleMedia
from ..processor.family import family
from ..processor.profile import ProcessorProfile, profile_of
from ..report import Batch

DEFAULT_TASK_PROMPT = "</s><s><predict_bbox><predict_classes><output_markdown>"


def _decoder_start_id(processor: Any) -> int:
    tokenizer = profile_of(processor).tokenizer
    for owner, attribute in (
        (processor, "decoder_start_token_id"),
        (tokenizer, "decoder_start_token_id"),
        (tokenizer, "bos_token_id"),
        (tokenizer, "eos_token_id"),
    ):
        tid = getattr(owner, attribute, None)
        if isinstance(tid, int):
            return tid
    raise CollateError(
        f"{type(tokenizer).__name__} has no decoder start, bos or eos token; "
        "set tokenizer.bos_token before collating with shift=False"
    )


def _page(
    example: Any, conversation: Conversation, index: int, profile: ProcessorProfile, base_dir: Any
) -> SampleMedia:
    """The sample's one page image (loaded by the shared step); any other count is an
    error naming the sample."""
    media = loaded_media(example, conversation, index, profile, base_dir)
    if len(media.images) != 1:
        raise SampleError(
            f"sample {index} has {len(media.images)} images; Nemotron-Parse reads exactly one "
            "page image per sample: put one {'type': 'image', 'image': ...} item in the user turn"
        )
    return media


@family("nemotron_parse", classes=("NemotronParseProcessor",), model_types=("nemotron_parse",))
def nemotron_parse_collate_fn(
    examples: list,
    processor: Any,
    task_prompt: str = DEFAULT_TASK_PROMPT,
    pixel_dtype: torch.dtype | None = torch.bfloat16,
    **options: Any,
) -> Batch:
    """Batch for Nemotron-Parse: ``pixel_values`` (cast to ``pixel_dtype``, bfloat16 by
    default), ``input_ids``, ``attention_mask``, ``labels``, ``decoder_input_ids``,
    ``decoder_attention_mask`` and ``n_images_per_sample`` ``(B,)``.

    The text is ``task_prompt + first assistant reply + eos`` (tokenized without added
    specials); the prompt is -100, the reply and its end token are targets. Shifted
    (the default, as the seed): ``decoder_input_ids`` equals the shifted ``input_ids``
    and position i predicts ``labels[:, i]``. With ``shift=False`` labels are
    unshifted and ``decoder_input_ids`` is ``input_ids`` shifted right behind the
    decoder start token, as Hugging Face encoder-decoders expect. Every sample needs
    exactly one image. No ``shift_labels`` key (an encoder-decoder loss never
    shifts) and right padding only (the decoder inputs start at column 0).
    """
    opts = seed_options(extra_names=("task_prompt", "pixel_dtype"), **options)
    pixel_dtype = dtype_option("pixel_dtype", pixel_dtype)
    if not isinstance(task_prompt, str):
        raise OptionError(f"task_prompt must be a string, got {type(task_prompt).__name__}")
    if opts.padding_side != "right":
        raise OptionError(
            "nemotron_parse_collate_fn pads on the right only (decoder inputs start at "
            f"column 0); got padding_side={opts.padding_side!r}"
        )
    tokenizer = profile_of(processor).tokenizer
    eos = tokenizer.eos_token
    if eos is None:
        raise CollateError(
            f"{type(tokenizer).__name__} has no eos token to close the reply; set one"
        )
    prompt = as_int64(tokenizer(task_prompt, add_special_tokens=False)["input_ids"])
    shift = opts.shift
    start = None if shift else _decoder_start_id(processor)

    def decoder_texts(conversations: list[Conversation]) -> list[str]:
        replies = [
            extract_assistant_text(turns[0]) if (turns := assistant_turns(c)) else ""
            for c in conversations
        ]
        return [task_prompt + reply + eos for reply in replies]

    def check_prompt(encoded: dict, collected: Collected) -> None:
        ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
        for row, index in enumerate(collected.indices):
            if mask[row, 0] == 0:
                raise SampleError(
                    "the processor pads on the left; set its tokenizer's padding_side='right'"
                )
            if not np.array_equal(ids[row, : len(prompt)], prompt):
                raise SampleError(
                    f"sample {index}: the task prompt's tokens merge with the reply's; end the "
                    "task prompt with a special token (as the default does)"
                )

    def label(encoded: dict, conversations: list) -> np.ndarray:
        ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
        replied = np.array([bool(assistant_turns(c)) for c in conversations])[:, None]
        after_prompt = np.arange(ids.shape[1])[None, :] >= len(prompt)
        return np.where((mask != 0) & after_prompt & replied, ids, IGNORE_INDEX)

    quirks = Quirks(
        render=decoder_texts, load=_page, finish=check_prompt, counts=True, pixel_dtype=pixel_dtype
    )
    batch = collate(
        examples,
        processor,
        opts.replace(return_tensors="pt"),
        quirks,
        labeler=label,
        media_ids=[],
        shift_labels=False,
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if shift:
        batch["decoder_input_ids"], batch["decoder_attention_mask"] = ids.clone(), mask.clone()
    else:
        first = torch.full((ids.shape[0], 1), start, dtype=ids.dtype)
        batch["decoder_input_ids"] = torch.cat([first, ids[:, :-1]], dim=1)
        batch["decoder_attention_mask"] = torch.cat([torch.ones_like(first), mask[:, :-1]], dim=1)
    return Batch(converted(batch, opts.return_tensors), report=batch.report)
