"""Augmentation and cropping keep polygons aligned with pixels; the crop never cuts cared-for text."""
import cv2
import numpy as np
import pytest

from data.processes import AugmentDetectionData, MakeICDARData, NormalizeImage, RandomCropData
from data.processes.pending_warp import image_hw, materialize
from data.rng import reseed

ORIGINAL_ARGS = [['Fliplr', 0.5], {'cls': 'Affine', 'rotate': [-10, 10]}, ['Resize', [0.5, 3.0]]]


def polygon_sample(width=300, height=200):
    poly = np.array([[60, 50], [200, 70], [190, 120], [70, 110]], dtype=np.float64)
    image = np.zeros((height, width, 3), np.uint8)
    cv2.fillPoly(image, [poly.astype(np.int32)], (255, 255, 255))
    return {'image': image, 'lines': [{'poly': poly.tolist(), 'text': 'a'}], 'is_training': True,
            'filename': 'x', 'data_id': 'x'}


def mask_iou(data):
    materialize(data)
    pixels = data['image'][:, :, 0] > 127
    drawn = np.zeros(pixels.shape, np.uint8)
    poly = data['lines'][0]['poly'] if 'lines' in data else data['polygons'][0]
    cv2.fillPoly(drawn, [np.round(np.asarray(poly)).astype(np.int32)], 1)
    drawn = drawn.astype(bool)
    return (pixels & drawn).sum() / max((pixels | drawn).sum(), 1)


@pytest.mark.parametrize('args', [
    [['Fliplr', 1.0]],
    [{'cls': 'Affine', 'rotate': [25, 25]}],
    [{'cls': 'Affine', 'scale': [0.7, 0.7], 'translate_percent': {'x': 0.1, 'y': -0.05}, 'shear': 12}],
    [['Resize', [1.7, 1.7]]],
    [['Resize', {'width': 150, 'height': 260}]],
    [['Fliplr', 1.0], {'cls': 'Affine', 'rotate': [-10, -10]}, ['Resize', [2.5, 2.5]]],
])
def test_augmentation_keeps_polygon_on_its_pixels(args):
    reseed(3)
    data = AugmentDetectionData(args).process(polygon_sample())
    assert data['shape'] == [200, 300]
    assert mask_iou(data) > 0.93


def test_fliplr_maps_pixels_exactly():
    data = polygon_sample()
    original = data['image'].copy()
    data = materialize(AugmentDetectionData([['Fliplr', 1.0]]).process(data))
    assert np.array_equal(data['image'], original[:, ::-1])
    assert np.allclose(data['lines'][0]['poly'][0], [299 - 60, 50])


def test_crop_composes_with_augmentation_into_one_warp():
    for seed in range(8):
        reseed(seed)
        data = AugmentDetectionData(ORIGINAL_ARGS).process(polygon_sample())
        data = RandomCropData(size=[160, 128], max_tries=10).process(data)
        assert image_hw(data) == (128, 160) and 'pending_warp' in data
        if data['lines']:
            assert mask_iou(data) > 0.9
        assert data['image'].shape == (128, 160, 3)


def test_processes_work_separately_on_materialized_images():
    reseed(0)
    data = materialize(AugmentDetectionData([['Resize', [2.0, 2.0]]]).process(polygon_sample()))
    assert data['image'].shape == (400, 600, 3)
    data = MakeICDARData().process(data)
    data = RandomCropData(size=[640, 640]).process(data)
    assert mask_iou(data) > 0.9
    tensor = NormalizeImage().process(data)['image']
    assert tuple(tensor.shape) == (3, 640, 640) and 'pending_warp' not in data


def test_crop_never_cuts_cared_polygons():
    rng = np.random.default_rng(0)
    crop = RandomCropData(size=[256, 256], max_tries=50)
    for seed in range(40):
        reseed(seed)
        lines = []
        for index in range(int(rng.integers(1, 8))):
            x, y, w, h = rng.uniform(0, 500), rng.uniform(0, 350), rng.uniform(10, 120), rng.uniform(8, 40)
            lines.append({'poly': [[x, y], [x + w, y], [x + w, y + h], [x, y + h]],
                          'text': '###' if index % 3 == 2 else 'w'})
        data = {'image': np.zeros((400, 600, 3), np.uint8), 'lines': lines, 'is_training': True}
        data = crop.process(data)
        valid_w, valid_h = data['pending_warp']['valid']
        for line in data['lines']:
            if line['text'] == '###':
                continue
            poly = np.asarray(line['poly'])
            assert poly[:, 0].min() >= -0.5 - 1e-6 and poly[:, 1].min() >= -0.5 - 1e-6
            assert poly[:, 0].max() <= valid_w - 0.5 + 1e-6 and poly[:, 1].max() <= valid_h - 0.5 + 1e-6


def test_crop_pads_bottom_right_with_zeros():
    data = {'image': np.full((100, 200, 3), 200, np.uint8), 'lines': [], 'is_training': True}
    data = materialize(RandomCropData(size=[100, 100]).process(data))  # no text: whole image, scaled by 0.5
    assert data['image'].shape == (100, 100, 3)
    assert (data['image'][:50] == 200).all() and (data['image'][50:] == 0).all()


def test_validation_resize_keeps_ratio_and_original_polygons():
    process = AugmentDetectionData([['Resize', {'width': 800, 'height': 736}]], only_resize=True, keep_ratio=True)
    data = {'image': np.zeros((720, 1280, 3), np.uint8), 'lines': [{'poly': [[1, 2], [3, 2], [3, 4]], 'text': 'a'}],
            'is_training': False}
    data = process.process(data)
    assert data['image'].shape == (736, 1312, 3)  # ceil(1280 * 736 / 720 / 32) * 32
    assert data['lines'][0]['poly'] == [[1, 2], [3, 2], [3, 4]] and data['shape'] == [720, 1280]
    fixed = AugmentDetectionData([['Resize', {'width': 800, 'height': 800}]], only_resize=True, keep_ratio=False)
    assert fixed.process({'image': np.zeros((720, 1280, 3), np.uint8), 'lines': []})['image'].shape == (800, 800, 3)


def test_bad_augmenter_arguments_are_reported():
    with pytest.raises(ValueError, match='Blur'):
        AugmentDetectionData([['Blur', 1]])
    with pytest.raises(ValueError, match='only_resize'):
        AugmentDetectionData([['Resize', [0.5, 2]]], only_resize=True)
