"""SegDetectorVisualizer: colours in the right places, maps rendered, names from the file names."""
import cv2
import numpy as np
import torch

from structure.visualizers import SegDetectorVisualizer


def test_ground_truth_and_detections_are_drawn_in_their_colours(tmp_path):
    original = np.full((60, 100, 3), 255, dtype=np.uint8)
    path = str(tmp_path / 'img_3.jpg')
    cv2.imwrite(path, original)
    batch = {'filename': [path], 'shape': [(60, 100)], 'image': torch.zeros(1, 3, 32, 64),
             'polygons': [[np.array([[10, 10], [40, 10], [40, 30], [10, 30]], np.float32)]],
             'ignore_tags': [[False]]}
    boxes = [np.array([[[60, 20], [90, 20], [90, 50], [60, 50]]], np.int32)]
    pred = torch.zeros(1, 1, 32, 64)
    pred[0, 0, 5:10, 5:20] = 1.0
    images = SegDetectorVisualizer(line_width=1).visualize(batch, (boxes, [[0.9]]), {'binary': pred})
    assert set(images) == {'img_3_output', 'img_3_binary'}
    canvas = images['img_3_output']
    assert canvas.shape == (60, 100, 3) and canvas.dtype == np.uint8
    assert tuple(canvas[10, 25]) == (0, 255, 0)   # on the ground truth's top edge
    assert tuple(canvas[35, 90]) == (0, 0, 255)   # on the detection's right edge
    assert tuple(canvas[20, 25]) == (255, 255, 255)  # inside: untouched
    rendered = images['img_3_binary']
    assert rendered.shape == (32, 64, 3) and rendered[7, 10].tolist() == [255, 255, 255] and rendered[20, 40].max() == 0


def test_without_a_readable_file_the_input_is_denormalised_to_the_original_size():
    image = torch.zeros(1, 3, 32, 64)  # zeros = the mean colour
    batch = {'filename': ['/nonexistent/a.jpg'], 'shape': [(64, 128)], 'image': image,
             'polygons': [[]], 'ignore_tags': [[]]}
    images = SegDetectorVisualizer().visualize(batch, ([[]], [[]]), image[:, :1])
    canvas = images['a_output']
    assert canvas.shape == (64, 128, 3)
    assert canvas[0, 0].tolist() == [123, 117, 104]  # the BGR mean, rounded to the nearest integer
    assert images['a_pred'].shape == (32, 64, 3)
