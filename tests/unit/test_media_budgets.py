"""Image budgets (``min_pixels``/``max_pixels``) are applied by the processor's own resize
rule: the processor path, the fast path and the length estimate give the grids the
processor gives when called with that budget through its own documented keyword."""

from __future__ import annotations

import pytest
import torch

from helpers import make_image, one_turn
from vlm_collate import VLMCollator, qwen2_5_collate_fn
from vlm_collate.errors import OptionError
from vlm_collate.processor.fast_plan import fast_plan
from vlm_collate.processor.media_tokens import image_tokens, pixel_budget
from vlm_collate.processor.render import renderer_for
from vlm_collate.testing.families import FAMILY_PROCESSORS

pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing `min_pixels`:FutureWarning"
)  # the reference

SIZES = [(800, 1000), (1000, 800), (333, 517), (40, 30)]  # (width, height)


def rows():
    return [
        one_turn({"type": "image", "image": make_image(w, h, seed=i)}, "what?", reply="ok")
        for i, (w, h) in enumerate(SIZES)
    ]


def processor_with_budget(processor, examples, **budget):
    """The processor called directly, the budget through its own ``min_pixels`` /
    ``max_pixels`` image keywords (not the route the library takes)."""
    from vlm_collate.processor.profile import profile_of

    render = renderer_for(profile_of(processor))
    texts = [render(e["conversation"]) for e in examples]
    images = [[item["image"] for item in e["conversation"][0]["content"][:1]] for e in examples]
    return processor(
        text=texts,
        images=images,
        padding=True,
        add_special_tokens=False,
        return_tensors="pt",
        images_kwargs=budget,
    )


@pytest.mark.parametrize(
    "budget",
    [
        {"max_pixels": 100_000},
        {"min_pixels": 200_000},
        {"min_pixels": 50_000, "max_pixels": 60_000},
    ],
)
@pytest.mark.parametrize("fast", [True, False])
def test_budget_gives_the_processors_grids(qwen_processor, budget, fast):
    assert fast_plan(qwen_processor) is not None  # the fast path does take this processor
    examples = rows()
    expected = processor_with_budget(qwen_processor, examples, **budget)
    default = qwen2_5_collate_fn(examples, qwen_processor, shift=False)
    batch = qwen2_5_collate_fn(examples, qwen_processor, shift=False, fast_path=fast, **budget)
    assert torch.equal(batch["image_grid_thw"], expected["image_grid_thw"])
    assert not torch.equal(batch["image_grid_thw"], default["image_grid_thw"])  # it took effect
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])
    width = expected["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][:, :width], expected["input_ids"])
    # the length estimate agrees: one placeholder expanded per image under the budget
    resolved = pixel_budget(qwen_processor, budget.get("min_pixels"), budget.get("max_pixels"))
    for (w, h), grid in zip(SIZES, batch["image_grid_thw"]):
        assert image_tokens(qwen_processor, h, w, resolved) == int(grid.prod()) // 4


def test_budget_through_vlmcollator_options(qwen_processor):
    examples = rows()
    expected = processor_with_budget(qwen_processor, examples, max_pixels=100_000)
    batch = VLMCollator(qwen_processor, max_pixels=100_000)(examples)
    assert torch.equal(batch["image_grid_thw"], expected["image_grid_thw"])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_budget_on_other_qwen_families(family):
    processor = FAMILY_PROCESSORS[family]()
    examples = rows()[:2]
    expected = processor_with_budget(processor, examples, max_pixels=100_000)
    for fast in (True, False):
        batch = VLMCollator(processor, max_pixels=100_000, fast_path=fast)(examples)
        assert torch.equal(batch["image_grid_thw"], expected["image_grid_thw"])
        assert torch.equal(batch["pixel_values"], expected["pixel_values"])


def test_budget_resolution_keeps_the_processors_other_bound(qwen_processor):
    size = qwen_processor.image_processor.size
    assert pixel_budget(qwen_processor) is None
    assert pixel_budget(qwen_processor, max_pixels=100_000) == (size["shortest_edge"], 100_000)
    assert pixel_budget(qwen_processor, min_pixels=10**7) == (10**7, 10**7)
    assert pixel_budget(qwen_processor, max_pixels=1000) == (1000, 1000)


def test_a_processor_without_a_pixel_budget_refuses_one():
    processor = FAMILY_PROCESSORS["idefics3"]()
    with pytest.raises(OptionError, match=r"no pixel-budget resize rule.*size options"):
        VLMCollator(processor, max_pixels=100_000)(rows()[:1])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_pixels": 0}, "max_pixels must be at least 1"),
        ({"min_pixels": 2.5}, "min_pixels must be an integer"),
        ({"min_pixels": 10, "max_pixels": 5}, "min_pixels=10 is above max_pixels=5"),
        ({"allow_absolute_paths": "yes"}, "allow_absolute_paths must be True or False"),
    ],
)
def test_budget_options_are_checked(values, message):
    from vlm_collate import CollateOptions

    with pytest.raises(OptionError, match=message):
        CollateOptions(**values)


@pytest.mark.parametrize("budget", [{"max_pixels": 100_000}, {"min_pixels": 200_000}])
def test_length_estimator_takes_the_budget(qwen_processor, budget):
    from vlm_collate import LengthEstimator

    examples = rows()
    batch = VLMCollator(qwen_processor, **budget)(examples)
    real = batch["attention_mask"].sum(dim=1).tolist()
    options = VLMCollator(qwen_processor, **budget).options
    for given in (
        LengthEstimator(qwen_processor, **budget),
        LengthEstimator(qwen_processor, options=options),
    ):
        assert [given(e, i) for i, e in enumerate(examples)] == real
    plain = LengthEstimator(qwen_processor)
    assert [plain(e, i) for i, e in enumerate(examples)] != real  # the budget took effect


@pytest.mark.parametrize("fast", [True, False])
def test_row_and_item_budgets_override_the_options(qwen_processor, fast):
    from vlm_collate import LengthEstimator

    examples = rows()
    examples[0] = {**examples[0], "max_pixels": 60_000}  # a row's own budget
    item = examples[1]["conversation"][0]["content"][0]
    examples[1]["conversation"][0]["content"][0] = {**item, "max_pixels": 30_000}  # an item's
    batch = VLMCollator(qwen_processor, max_pixels=100_000, fast_path=fast)(examples)
    for k, cap in enumerate([60_000, 30_000, 100_000, 100_000]):
        alone = processor_with_budget(qwen_processor, [rows()[k]], max_pixels=cap)
        assert torch.equal(batch["image_grid_thw"][k], alone["image_grid_thw"][0]), k
        width = alone["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][k, :width], alone["input_ids"][0])
    expected = processor_with_budget(qwen_processor, [rows()[1]], max_pixels=30_000)
    start = int(batch["image_grid_thw"][0].prod())
    rows_1 = int(expected["image_grid_thw"].prod())
    assert torch.equal(batch["pixel_values"][start : start + rows_1], expected["pixel_values"])
    estimate = LengthEstimator(qwen_processor, max_pixels=100_000)
    real = batch["attention_mask"].sum(dim=1).tolist()
    assert [estimate(e, i) for i, e in enumerate(examples)] == real


def test_a_bad_row_budget_names_the_sample(qwen_processor):
    from vlm_collate.errors import CollateError

    examples = rows()[:2]
    examples[1] = {**examples[1], "max_pixels": "big"}
    with pytest.raises(CollateError, match=r"sample 1.*max_pixels must be a positive integer"):
        VLMCollator(qwen_processor)(examples)
