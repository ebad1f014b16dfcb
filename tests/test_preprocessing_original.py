"""The network input is the original's, to the bit: float32 image, then cv2.resize, then ``-= RGB_MEAN`` (float64
mean) and ``/= 255.`` (its demo.py and its ImageDataset + NormalizeImage, read by its eval.py), in the Python API,
the evaluation pipeline (eval.py, validation, the ONNX check) and demo.py; the uint8 resize only on request."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.input_size import InputSize
from inference.preprocess import prepare_image
from structure.measurers import result_lines

ORIGINAL_MEAN = np.array([122.67891434, 116.66876762, 104.00698793])  # the original's NormalizeImage.RGB_MEAN


def original_input(path: str, size) -> np.ndarray:
    """The original's arithmetic, written out as its demo.py did it: (1, 3, H, W) float32."""
    image = cv2.imread(path, cv2.IMREAD_COLOR).astype('float32')
    image = cv2.resize(image, (size[1], size[0]))
    image -= ORIGINAL_MEAN
    image /= 255.
    return image.transpose(2, 0, 1)[None]


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A real-looking picture: a smooth colour gradient, sensor noise, dark and light text-like strokes."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([80 + 100 * xs / width, 120 + 60 * ys / height, 200 - 90 * xs / width], axis=2)
    image = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    for _ in range(12):
        y, x = int(rng.integers(0, height - 12)), int(rng.integers(0, width - 60))
        colour = tuple(rng.integers(0, 255, 3).tolist())
        cv2.putText(image, 'TEXT42', (x, y + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return image


SIZES = [(720, 1280), (480, 640), (1000, 750), (97, 333), (736, 1312)]


@pytest.fixture(scope='module')
def photos(module_tmp):
    folder = module_tmp('photos')
    paths = []
    for index, (height, width) in enumerate(SIZES):
        path = str(folder / f'photo{index}.jpg')
        cv2.imwrite(path, photo(height, width, index), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def test_the_api_input_is_the_originals(photos):
    rule = InputSize('short_side', 736, 2560)
    for path in photos:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        size = rule(*image.shape[:2])
        expected = original_input(path, size)
        assert np.array_equal(prepare_image(image, size), expected), path
        fast = prepare_image(image, size, 'uint8')
        if size != image.shape[:2]:
            # the 8-bit resize rounds: a different input (so the equality above is not a tautology)
            assert not np.array_equal(fast, expected) and np.abs(fast - expected).max() < 1.0 / 255 + 1e-6


def test_the_evaluation_pipeline_input_is_the_originals(photos):
    from data.processes import AugmentDetectionData, NormalizeImage
    resize = AugmentDetectionData([['Resize', {'width': 1280, 'height': 736}]], only_resize=True)
    short_side = AugmentDetectionData(only_resize=True, short_side=736, max_long_side=2560)
    for path in photos:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        demo_size = InputSize('short_side', 736, 2560)(*image.shape[:2])
        for process, size in ((resize, (736, 1280)), (short_side, demo_size)):
            data = NormalizeImage().process(process.process({'image': image.copy(), 'polys': []}))
            assert np.array_equal(data['image'].numpy()[None], original_input(path, size)), path
    with pytest.raises(ValueError, match='resize_dtype'):
        AugmentDetectionData(only_resize=True, short_side=736, resize_dtype='float16')


def test_detections_equal_those_of_the_original_input(photos, tmp_path):
    from inference.detector import TextDetector
    from inference_helpers import save_checkpoint, tiny_model, write_experiment
    model = tiny_model('resnet18')
    experiment = write_experiment(str(tmp_path), str(tmp_path), backbone='resnet18', thresh=0.5, box_thresh=0.4)
    detector = TextDetector(experiment, save_checkpoint(model, str(tmp_path / 'model.pth')), image_short_side=256,
                            orientation='stored')
    import torch
    found = 0
    for path in photos:
        result = detector(path)
        reference = original_input(path, result.input_size)
        with torch.inference_mode():  # the detector's own network (BatchNorm folded): only the input differs
            prob = detector.runner.model(torch.from_numpy(reference), training=False)
        boxes, scores = detector.representer.represent({'shape': [result.image_size]}, prob)
        assert result.lines() == result_lines(list(boxes[0]), scores[0], True), path
        found += len(result)
    assert found > 0
