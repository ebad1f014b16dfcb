"""Synthetic scene text: polygons enclose the rendered text, output is deterministic, layout is readable."""
import os

import cv2
import numpy as np

from data import ImageDataset
from data.synthetic import FontBank, find_fonts, generate_image, image_rng, main

FONTS = FontBank(find_fonts('all'))


def test_polygons_enclose_rendered_text():
    curved = 0
    dont_care = 0
    for index in range(8):
        image, words = generate_image(image_rng(11, 'train', index), FONTS, size=480)
        assert image.dtype == np.uint8 and max(image.shape[:2]) == 480
        for word in words:
            text_pixels = word.mask > 0.5
            inside = np.zeros(word.mask.shape, np.uint8)
            cv2.fillPoly(inside, [np.round(word.polygon - word.origin).astype(np.int32)], 1)
            covered = (text_pixels & inside.astype(bool)).sum() / max(text_pixels.sum(), 1)
            assert covered >= 0.97, (index, word.text, covered)
            x, y = word.origin
            assert 0 <= x and 0 <= y
            assert x + word.mask.shape[1] <= image.shape[1] and y + word.mask.shape[0] <= image.shape[0]
            curved += len(word.polygon) >= 10
            dont_care += word.text == '###'
    assert curved > 0 and dont_care > 0


def test_same_seed_same_output_and_splits_differ():
    a_image, a_words = generate_image(image_rng(3, 'train', 0), FONTS, size=320)
    b_image, b_words = generate_image(image_rng(3, 'train', 0), FONTS, size=320)
    assert np.array_equal(a_image, b_image)
    assert [w.text for w in a_words] == [w.text for w in b_words]
    assert all(np.array_equal(w.polygon, v.polygon) for w, v in zip(a_words, b_words))
    test_image, _ = generate_image(image_rng(3, 'test', 0), FONTS, size=320)
    assert a_image.shape != test_image.shape or not np.array_equal(a_image, test_image)


def test_cli_writes_the_converted_layout(tmp_path):
    out = str(tmp_path / 'synthetic')
    main(['--out', out, '--train', '3', '--test', '2', '--seed', '4', '--size', '256', '--fonts', 'builtin'])
    for folder in ('train_images', 'train_gts', 'test_images', 'test_gts'):
        assert os.path.isdir(os.path.join(out, folder))
    with open(os.path.join(out, 'train_list.txt')) as handle:
        assert handle.read().split() == ['img_1.jpg', 'img_2.jpg', 'img_3.jpg']
    dataset = ImageDataset(data_dir=[out], data_list=[os.path.join(out, 'test_list.txt')], processes=[])
    assert len(dataset) == 2 and not dataset.is_training
    sample = dataset[0]
    assert sample['image'].shape[:2] in ((256, sample['image'].shape[1]), (sample['image'].shape[0], 256))
    assert 3 <= len(sample['lines']) <= 15
    with open(os.path.join(out, 'test_gts', 'img_1.jpg.txt')) as handle:
        first = handle.readline().strip().split(',')
    assert len(first) % 2 == 1 and len(first) >= 9
