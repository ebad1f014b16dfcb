"""TextDetector refuses what is not an image or a list of images with a TypeError saying what it accepts
(issue 25: ``TextDetector(...)(None)`` said "'NoneType' object is not iterable")."""
import numpy as np
import pytest

from inference_helpers import save_checkpoint, tiny_model, write_experiment


@pytest.fixture(scope='module')
def detector(module_tmp):
    from inference.detector import TextDetector
    tmp = module_tmp('detector_input')
    experiment = write_experiment(str(tmp), str(tmp))
    checkpoint = save_checkpoint(tiny_model('deformable_resnet18'), str(tmp / 'model.pth'))
    return TextDetector(experiment, checkpoint, device='cpu', image_short_side=64)


@pytest.mark.parametrize('images', [None, 3, 2.5, object()])
def test_call_with_no_image_is_a_type_error_saying_what_is_accepted(detector, images):
    with pytest.raises(TypeError, match=r'TextDetector: expected an image \(a path as str, bytes or os.PathLike, '
                                        r'or an \(H, W\[, C\]\) NumPy array\) or a list of them, got '
                                        + type(images).__name__):
        detector(images)
    with pytest.raises(TypeError, match='expected an image'):
        next(detector.detect_many(images))


def test_a_list_holding_none_names_the_item(detector):
    with pytest.raises(TypeError, match='image 1: expected a path or a NumPy array, got NoneType'):
        detector([np.full((32, 32, 3), 200, np.uint8), None])


def test_images_still_detect(detector):
    image = np.full((32, 48, 3), 200, np.uint8)
    assert detector(image).image_size == (32, 48)
    assert [result.image_size for result in detector([image, image])] == [(32, 48), (32, 48)]
    assert [result.image_size for result in detector(iter([image]))] == [(32, 48)]
