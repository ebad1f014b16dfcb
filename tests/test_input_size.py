"""data.input_size.InputSize: the one network-input size rule, worked out by hand and against the original's
formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest

from data.input_size import InputSize
from data.processes import AugmentDetectionData


def test_short_side_rule_by_hand():
    rule = InputSize('short_side', 736, 2560)
    # 1280x720: short side 720 -> 736, long side 1280 * 736 / 720 = 1308.4 -> 1312 (up to a multiple of 32)
    assert rule(720, 1280) == (736, 1312)
    assert rule(1280, 720) == (1312, 736)                      # portrait: the width is the short side
    assert rule(480, 640) == (736, 992)                        # 981.3 -> 992
    assert rule(1, 1) == (736, 736)                            # a 1x1 image
    # 100x3000: 22080 long side > 2560 -> scale 2560 / 3000, height 85.3 -> 96
    assert rule.resolve(100, 3000) == (96, 2560, True)
    assert rule.resolve(1, 1000) == (32, 2560, True)           # never below 32
    assert InputSize('short_side', 384)(720, 1280) == (384, 704)  # 682.7 -> 704: eval's width, not 672
    with pytest.raises(ValueError, match='positive'):
        rule(0, 10)


def test_height_and_fixed_rules_are_the_original_validation_resize():
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(value) for value in rng.integers(1, 3000, 2))
        for side in (384, 736, 800, 1024):
            # the original's AugmentDetectionData keep_ratio: height fixed, width ceil(w * H / h / 32) * 32
            expected = (side, max(32, int(math.ceil(width * side / height / 32.0)) * 32))
            assert InputSize('height', side)(height, width) == expected
        assert InputSize('fixed', (736, 1280))(height, width) == (736, 1280)
        # landscape images: the demo's rule and the keep_ratio rule agree
        if height <= width:
            assert InputSize('short_side', 736)(height, width) == InputSize('height', 736)(height, width)


def test_bad_sizes_are_errors():
    for args, message in ((('nope', 736), 'mode'), (('short_side', 700), 'multiples of 32'),
                          (('fixed', 736), r'\(height, width\)'), (('short_side', 736, 16), 'max_long_side')):
        with pytest.raises(ValueError, match=message):
            InputSize(*args)


def test_evaluation_pipeline_uses_the_rule():
    fixed = AugmentDetectionData([['Resize', {'width': 1280, 'height': 736}]], keep_ratio=False, only_resize=True)
    ratio = AugmentDetectionData([['Resize', {'width': 800, 'height': 800}]], keep_ratio=True, only_resize=True)
    short = AugmentDetectionData([['Resize', {'width': 800, 'height': 800}]], keep_ratio=True, only_resize=True,
                                 short_side=384, max_long_side=2560)
    for height, width in ((720, 1280), (1280, 720), (1, 1), (500, 500), (97, 3001)):
        assert fixed.resize_shape(height, width) == (736, 1280)
        assert ratio.resize_shape(height, width) == InputSize('height', 800)(height, width)
        assert short.resize_shape(height, width) == InputSize('short_side', 384, 2560)(height, width)
        image = np.zeros((height, width, 3), dtype=np.uint8)
        data = short.process({'image': image, 'lines': [], 'is_training': False})
        assert data['image'].shape[:2] == InputSize('short_side', 384, 2560)(height, width)
        assert data['shape'] == [height, width]
