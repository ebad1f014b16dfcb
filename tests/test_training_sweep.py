"""The box_thresh sweep of validation during training: hand-worked rows, a second method, and an unchanged
main figure."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import training_helpers as helpers
from structure.measurers import DEFAULT_THRESHOLDS, QuadMeasurer
from structure.representers import SegDetectorRepresenter
from training.trainer import Trainer

HEIGHT, WIDTH = 64, 96
# (rows, cols, probability): two words and one false alarm; no score lies on a swept threshold
WORD_A, WORD_B, FALSE_ALARM = ((8, 20), (8, 40), 0.87), ((40, 52), (8, 40), 0.42), ((20, 32), (60, 90), 0.62)


def _grown_rectangle(rows, cols, ratio=1.5):
    """The region's rectangle grown by the representer's unclip distance: what a detection of it covers."""
    (y0, y1), (x0, x1) = rows, cols
    width, height = x1 - 1 - x0, y1 - 1 - y0
    distance = width * height * ratio / (2 * (width + height))
    x0, y0, x1, y1 = x0 - distance, y0 - distance, x1 - 1 + distance, y1 - 1 + distance
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


class MapSet(Dataset):
    """Channel 0 of each image is the probability map a model should output."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        image = torch.zeros(3, HEIGHT, WIDTH)
        for (y0, y1), (x0, x1), probability in (WORD_A, WORD_B, FALSE_ALARM):
            image[0, y0:y1, x0:x1] = probability
        polygons = [_grown_rectangle(*WORD_A[:2]), _grown_rectangle(*WORD_B[:2])]
        return {'image': image, 'polygons': polygons, 'ignore_tags': np.array([False, False]),
                'shape': (HEIGHT, WIDTH), 'filename': f'map_{index}.png'}


class MapModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, batch, training=None):
        image = batch['image'] if isinstance(batch, dict) else batch  # the evaluation loop gives the tensor
        return image[:, :1]


def _trainer(tmp_path, sweep, thresholds=None):
    validation = SimpleNamespace(data_loaders={'maps': DataLoader(MapSet(), batch_size=2, collate_fn=helpers.collect)},
                                 visualize=False, interval=1000, exempt=-1, is_output_polygon=False,
                                 sweep=sweep, sweep_thresholds=thresholds)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(4), validation=validation, measurer=QuadMeasurer(),
                                         representer=SegDetectorRepresenter(thresh=0.3, box_thresh=0.5))
    return Trainer(experiment, helpers.options(str(tmp_path), validate=True))


def test_sweep_rows_worked_out_by_hand(tmp_path):
    trainer = _trainer(tmp_path, sweep=True)
    trainer.logger.open(str(tmp_path))
    main = trainer.validate(MapModel())['maps']
    trainer.logger.close()
    rows = {row['box_thresh']: row for row in trainer.last_sweep['maps']['rows']}
    assert sorted(rows) == list(DEFAULT_THRESHOLDS)
    for threshold, row in rows.items():
        # kept per image: 0.3-0.4 all three (2 of them words), 0.45-0.6 word A and the false alarm,
        # 0.65-0.85 word A alone, 0.9 nothing
        precision, recall = ((2 / 3, 1.0) if threshold < 0.42 else (0.5, 0.5) if threshold < 0.62
                             else (1.0, 0.5) if threshold < 0.87 else (0.0, 0.0))
        assert (row['precision'], row['recall']) == pytest.approx((precision, recall)), threshold
    assert trainer.last_sweep['maps']['best']['box_thresh'] == 0.3
    assert trainer.last_sweep['maps']['best']['fmeasure'] == pytest.approx(0.8)
    # the main figure at the representer's box_thresh 0.5: word A and the false alarm
    assert main == pytest.approx({'precision': 0.5, 'recall': 0.5, 'fmeasure': 0.5})
    log = (tmp_path / 'output.log').read_text()
    assert 'box_thresh sweep, best box_thresh=0.30 fmeasure=0.8000' in log


def test_sweep_equals_a_representer_run_per_threshold_and_leaves_the_main_figure(tmp_path):
    thresholds = [0.35, 0.5, 0.6, 0.7]
    swept = _trainer(tmp_path / 'swept', sweep=True, thresholds=thresholds)
    plain = _trainer(tmp_path / 'plain', sweep=False)
    assert swept.validate(MapModel()) == plain.validate(MapModel())
    assert plain.last_sweep == {}
    assert swept.structure.representer.box_thresh == 0.5  # never changed: the threshold goes with each call
    measurer = QuadMeasurer()
    for row in swept.last_sweep['maps']['rows']:
        representer = SegDetectorRepresenter(thresh=0.3, box_thresh=row['box_thresh'])
        per_image = []
        for index in range(3):
            batch = helpers.collect([MapSet()[index]])
            output = representer.represent(batch, MapModel()(batch))
            per_image += measurer.validate_measure(batch, output)
        direct = measurer.gather_measure(per_image)
        assert (row['precision'], row['recall'], row['fmeasure']) == pytest.approx(
            (direct['precision'], direct['recall'], direct['fmeasure']))


def test_validation_needs_a_representer_with_box_thresh_and_a_sweep_a_measurer_with_a_protocol(tmp_path):
    validation = SimpleNamespace(data_loaders={'maps': None}, visualize=False, interval=10, exempt=-1, sweep=True)
    experiment = helpers.make_experiment(helpers.TinyTrainSet(4), validation=validation,
                                         representer=SimpleNamespace(represent=None))  # no box_thresh
    with pytest.raises(ValueError, match='expected one with a numeric box_thresh'):
        Trainer(experiment, helpers.options(str(tmp_path), validate=True))
    experiment = helpers.make_experiment(helpers.TinyTrainSet(4), validation=validation)  # stand-in measurer
    with pytest.raises(ValueError, match='the box_thresh sweep needs a measurer with a protocol'):
        Trainer(experiment, helpers.options(str(tmp_path), validate=True))
