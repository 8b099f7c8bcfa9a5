"""The image budget's arithmetic: Qwen-VL's resize rule restated, and the largest max_pixels that fits."""

import random

import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from dentvlm.data.image_budget import ImageBudget, qwen_resize

SEVEN_B = ImageBudget(factor=28, min_pixels=3136, max_pixels=589824)  # configs/qwen7b.yaml


def test_resize_rule_is_the_processors():
    rng = random.Random(0)
    sizes = [(768, 1024), (1024, 768), (1, 1), (10, 1000), (27, 29), (4000, 3000), (14, 14), (2000, 1500)]
    sizes += [(rng.randint(5, 4000), rng.randint(5, 4000)) for _ in range(500)]
    for height, width in sizes:
        if max(height, width) / min(height, width) > 200:
            continue
        for low, high in ((3136, 589824), (3136, 12544), (784, 200704), (50000, 60000)):
            assert qwen_resize(height, width, 28, low, high) == smart_resize(height, width, 28, low, high)


def test_a_code_photo_costs_713_tokens_at_the_7b_bound():
    assert SEVEN_B.tokens([(768, 1024)]) == 713
    assert SEVEN_B.tokens([(768, 1024)] * 6) > 4096 - 200  # why six photos passed the old cutoff


def test_fit_returns_the_largest_bound_that_fits():
    photos = [(768, 1024)] * 8
    for room in (300, 1000, 2500, 3900, 5704):
        pixels = SEVEN_B.fit(photos, room)
        assert SEVEN_B.tokens(photos, pixels) <= room
        if pixels < SEVEN_B.max_pixels:  # one pixel more would not fit
            assert SEVEN_B.tokens(photos, pixels + 1) > room
    assert SEVEN_B.fit(photos, 5704) == SEVEN_B.max_pixels  # 8 x 713 tokens fit unscaled


def test_fit_is_none_only_below_min_pixels_and_respects_an_upper_bound():
    photos = [(768, 1024)] * 8
    floor = SEVEN_B.tokens(photos, SEVEN_B.min_pixels)
    assert SEVEN_B.tokens(photos, SEVEN_B.fit(photos, floor)) == floor
    assert SEVEN_B.fit(photos, floor - 1) is None
    assert SEVEN_B.fit(photos, 10**6, upper=100_000) == 100_000
    assert SEVEN_B.fit([], 0) == SEVEN_B.max_pixels and SEVEN_B.fit([], -1) is None


def test_extreme_aspect_ratio_is_refused_like_the_processor():
    with pytest.raises(ValueError, match="aspect ratio"):
        qwen_resize(10, 3000, 28, 3136, 589824)
