"""Stand-ins that follow docs/ARCHITECTURE.md exactly, for the training tests (and the DDP worker script).

Run as a script under torchrun it is the worker of the DDP test:
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training_helpers.py OUT_DIR
"""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from concern.log import Logger  # noqa: E402
from data import DataLoader  # noqa: E402
from training.checkpoint import Checkpoint  # noqa: E402
from training.learning_rate import DecayLearningRate  # noqa: E402
from training.model_saver import ModelSaver  # noqa: E402
from training.optimizer_scheduler import OptimizerScheduler  # noqa: E402
from training.run_options import RunOptions  # noqa: E402

SIZE = 16


class _Holder(nn.Module):
    """Gives the original's key layout: ``model.module.backbone.*``, ``model.module.decoder.*``."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module):
        super().__init__()
        self.module = nn.Module()
        self.module.backbone = backbone
        self.module.decoder = decoder


class TinyDetector(nn.Module):
    """Contract of SegDetectorModel: training -> (loss, pred, metrics); inference -> probability map."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.model = _Holder(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1))
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, batch: Any, training: Optional[bool] = None) -> Any:
        training = self.training if training is None else training
        image = batch['image'] if isinstance(batch, dict) else batch
        features = self.dropout(torch.relu(self.model.module.backbone(image)))
        out = self.model.module.decoder(features)
        binary = torch.sigmoid(out[:, :1])
        if not training:
            return binary
        thresh = torch.sigmoid(out[:, 1:])
        thresh_binary = torch.sigmoid(50 * (binary - thresh))
        bce = F.binary_cross_entropy_with_logits(out[:, 0].float(), batch['gt'][:, 0], weight=batch['mask'])
        l1 = ((thresh[:, 0].float() - batch['thresh_map']).abs() * batch['thresh_mask']).mean()
        loss = bce + l1
        return loss, {'binary': binary, 'thresh': thresh, 'thresh_binary': thresh_binary}, {'bce': bce, 'l1': l1}


class TinyBuilder:
    def __init__(self, dropout: float = 0.0, batch_norm: bool = False):
        self.dropout = dropout
        self.batch_norm = batch_norm

    def build(self) -> nn.Module:
        return TinyBNDetector() if self.batch_norm else TinyDetector(self.dropout)


class TinyBNDetector(TinyDetector):
    """TinyDetector with BatchNorm after the first convolution: running statistics a forward can poison."""

    def __init__(self):
        super().__init__()
        self.model.module.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))


def _sample_arrays(index: int) -> Dict[str, np.ndarray]:
    rng = np.random.RandomState(index)
    image = rng.uniform(-0.5, 0.5, size=(3, SIZE, SIZE)).astype(np.float32)
    y0, x0 = rng.randint(0, SIZE // 2, size=2)
    gt = np.zeros((1, SIZE, SIZE), np.float32)
    gt[0, y0:y0 + 6, x0:x0 + 6] = 1.0
    image[0] += 0.8 * gt[0]  # the text region is visible in channel 0
    return {'image': image, 'gt': gt, 'box': np.array([x0, y0, x0 + 5, y0 + 5], np.int32)}


class TinyTrainSet(Dataset):
    """Training batch keys; ``noise`` draws from NumPy's global RNG (an augmentation stand-in);
    ``hooks`` maps a load count to a callable (used to deliver signals mid-run)."""

    def __init__(self, length: int = 12, noise: float = 0.0, nan_files: tuple = (),
                 hooks: Optional[Dict[int, Callable[[], None]]] = None, huge_files: tuple = (),
                 bad_files: tuple = ()):
        self.length = length
        # unreadable stand-ins: replaced by the next sample and reported, as ImageDataset
        self.bad_files = set(bad_files)
        self.reports: List[tuple] = []
        self.noise = noise
        self.nan_files = set(nan_files)
        self.huge_files = set(huge_files)  # finite images of 1e25: their activations overflow BatchNorm's variance
        self.hooks = hooks or {}
        self.loads = 0

    def __len__(self) -> int:
        return self.length

    def take_bad_samples(self) -> List[tuple]:
        taken, self.reports = self.reports, []
        return taken

    def __getitem__(self, index: int) -> Dict[str, Any]:
        while f'img_{index}.jpg' in self.bad_files:
            self.reports.append((f'img_{index}.jpg', f'img_{index}.jpg: cannot decode image (simulated)'))
            index = (index + 1) % self.length
        self.loads += 1
        if self.loads in self.hooks:
            self.hooks[self.loads]()
        arrays = _sample_arrays(index)
        image = arrays['image']
        if self.noise:
            image = image + self.noise * np.random.randn(*image.shape).astype(np.float32)
        filename = f'img_{index}.jpg'
        if filename in self.nan_files:
            image = np.full_like(image, np.nan)
        if filename in self.huge_files:
            image = image * np.float32(1e25)
        return {'image': torch.from_numpy(image), 'gt': torch.from_numpy(arrays['gt']),
                'mask': torch.ones(SIZE, SIZE), 'thresh_map': torch.full((SIZE, SIZE), 0.5),
                'thresh_mask': torch.ones(SIZE, SIZE), 'filename': filename}


class TinyValidationSet(Dataset):
    def __init__(self, length: int = 6):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, Any]:
        arrays = _sample_arrays(100 + index)
        x0, y0, x1, y1 = arrays['box'].tolist()
        polygon = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
        return {'image': torch.from_numpy(arrays['image']), 'polygons': [polygon],
                'ignore_tags': np.array([False]), 'shape': (SIZE, SIZE), 'filename': f'val_{index}.jpg'}


def collect(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """ICDARCollectFN's contract: stacked images, per-image lists for the rest."""
    batch = {key: [sample[key] for sample in samples] for key in samples[0]}
    batch['image'] = torch.stack(batch['image'])
    return batch


class BoxRepresenter:
    """Bounding box of the pixels above ``thresh``, one per image (or none when its mean is below box_thresh)."""

    def __init__(self, thresh: float = 0.5, box_thresh: float = 0.6):
        self.thresh = thresh
        self.box_thresh = box_thresh

    def represent(self, batch: Dict[str, Any], pred: Any, is_output_polygon: bool = False):
        box_thresh = self.box_thresh
        boxes_batch, scores_batch = [], []
        for probability in torch.as_tensor(pred)[:, 0]:
            ys, xs = torch.nonzero(probability > self.thresh, as_tuple=True)
            if len(xs) == 0 or float(probability[probability > self.thresh].mean()) < box_thresh:
                boxes_batch.append([])
                scores_batch.append([])
                continue
            x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
            boxes_batch.append([np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.int32)])
            scores_batch.append([float(probability[probability > self.thresh].mean())])
        return boxes_batch, scores_batch


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ax0, ay0 = a.min(0)
    ax1, ay1 = a.max(0)
    bx0, by0 = b.min(0)
    bx1, by1 = b.max(0)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0) + 1)
    ih = max(0.0, min(ay1, by1) - max(ay0, by0) + 1)
    inter = iw * ih
    union = (ax1 - ax0 + 1) * (ay1 - ay0 + 1) + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter
    return inter / union


class BoxMeasurer:
    """Per image: {'gt', 'det', 'match'} with a match at IoU >= 0.5; P/R/F over all images."""

    def validate_measure(self, batch: Dict[str, Any], output: Any, is_output_polygon: bool = False,
                         box_thresh: Optional[float] = None) -> List[Dict[str, int]]:
        boxes_batch, scores_batch = output
        results = []
        for gts, boxes, scores in zip(batch['polygons'], boxes_batch, scores_batch):
            kept = [box for box, score in zip(boxes, scores) if box_thresh is None or score >= box_thresh]
            match = sum(any(_box_iou(box, gt) >= 0.5 for gt in gts) for box in kept)
            results.append({'gt': len(gts), 'det': len(kept), 'match': match})
        return results

    def gather_measure(self, results: List[Dict[str, int]]) -> Dict[str, float]:
        gt = sum(r['gt'] for r in results)
        det = sum(r['det'] for r in results)
        match = sum(r['match'] for r in results)
        precision = match / det if det else 0.0
        recall = match / gt if gt else 0.0
        fmeasure = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {'precision': precision, 'recall': recall, 'fmeasure': fmeasure}


class MeanScoreMeasurer(BoxMeasurer):
    """Per image its file and best score; 'fmeasure' = mean score, 'precision' = number of results,
    'recall' = number of distinct files: shows that every image was measured exactly once."""

    def validate_measure(self, batch, output, is_output_polygon=False, box_thresh=None):
        return [{'file': name, 'score': max(scores, default=0.0)} for name, scores in zip(batch['filename'], output[1])]

    def gather_measure(self, results):
        return {'precision': float(len(results)), 'recall': float(len({r['file'] for r in results})),
                'fmeasure': sum(r['score'] for r in results) / len(results)}


def make_experiment(train_set: Dataset, batch_size: int = 4, epochs: int = 2, lr: float = 0.05,
                    save_interval: int = 1000, resume: Optional[str] = None, signal_path: Optional[str] = None,
                    validation: Any = None, measurer: Any = None, dropout: float = 0.0, shuffle: bool = True,
                    log_interval: int = 2, representer: Any = None, config: Optional[Dict[str, Any]] = None,
                    batch_norm: bool = False, momentum: float = 0.9,
                    scheduler: Optional[OptimizerScheduler] = None) -> SimpleNamespace:
    """An object with the attributes experiment.Experiment gives the trainer. ``scheduler``: another optimizer than
    the paper's SGD at ``lr`` and ``momentum``, which it replaces (the config recorded keeps ``lr``)."""
    structure = SimpleNamespace(builder=TinyBuilder(dropout, batch_norm), representer=representer or BoxRepresenter(),
                                measurer=measurer or BoxMeasurer(), visualizer=None)
    train = SimpleNamespace(
        data_loader=DataLoader(train_set, batch_size=batch_size, shuffle=shuffle, num_workers=0),
        checkpoint=Checkpoint(resume=resume),
        model_saver=ModelSaver(dir_path='model', save_interval=save_interval, signal_path=signal_path),
        scheduler=scheduler or OptimizerScheduler('SGD', {'lr': lr, 'momentum': momentum, 'weight_decay': 1e-4},
                                                  DecayLearningRate(lr=lr, epochs=epochs)),
        epochs=epochs)
    return SimpleNamespace(structure=structure, train=train, validation=validation,
                           logger=Logger(verbose=False, level='info', log_interval=log_interval),
                           config=config if config is not None else {'Experiment': {'tiny': True, 'lr': lr}})


def make_validation(length: int = 6, interval: int = 2, exempt: int = -1) -> SimpleNamespace:
    loader = DataLoader(TinyValidationSet(length), batch_size=2, num_workers=0, is_training=False, collect_fn=collect)
    return SimpleNamespace(data_loaders={'tiny': loader}, visualize=False, interval=interval, exempt=exempt)


def options(workspace: str, **overrides: Any) -> RunOptions:
    values = dict(name='tiny', workspace=workspace, device='cpu', seed=0, validate=False)
    values.update(overrides)
    return RunOptions(**values)


def model_state(workspace: str, name: str = 'final') -> Dict[str, torch.Tensor]:
    return torch.load(os.path.join(workspace, 'model', name), map_location='cpu', weights_only=True)['model']


def record_steps(trainer: Any, stop_after: Optional[int] = None) -> List[Tuple[int, List[int]]]:
    """Wraps ``trainer.run_step``: the returned list gets (epoch, sample indices of the batch) of every step the
    trainer takes, in order (TinyTrainSet's files ``img_<index>.jpg``). With ``stop_after`` the run stops after that
    many steps as a signal stops it: the step finishes and a checkpoint (``latest``) is written."""
    steps: List[Tuple[int, List[int]]] = []
    run_step = trainer.run_step

    def recorded(batch: Any) -> Any:
        steps.append((trainer.epoch, [int(name[len('img_'):-len('.jpg')]) for name in batch['filename']]))
        result = run_step(batch)
        if stop_after is not None and len(steps) >= stop_after:
            trainer.stop_reason = 'stopped by the test'
        return result

    trainer.run_step = recorded
    return steps


# ----------------------------------------------------------------------------------------------
# DDP worker (run under torchrun by tests/test_training_distributed.py)

DDP_SAMPLES, DDP_GLOBAL_BATCH, DDP_EPOCHS = 16, 8, 2


class FirstLoadsNaN(TinyTrainSet):
    """TinyTrainSet whose first ``count`` samples loaded are NaN images (one rank's first batch under DDP)."""

    def __init__(self, length: int, count: int):
        super().__init__(length)
        self.count = count

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = super().__getitem__(index)
        if self.loads <= self.count:
            sample['image'] = torch.full_like(sample['image'], float('nan'))
        return sample


def ddp_experiment(workspace: str, nan_first_batch: bool = False, precise_bn: int = 0) -> SimpleNamespace:
    """The DDP test's experiment; ``nan_first_batch``: this process's first batch holds NaN images; ``precise_bn``:
    a model with BatchNorm whose statistics are recomputed over that many global batches at the end."""
    train_set = FirstLoadsNaN(DDP_SAMPLES, DDP_GLOBAL_BATCH // 2) if nan_first_batch else TinyTrainSet(DDP_SAMPLES)
    experiment = make_experiment(train_set, batch_size=DDP_GLOBAL_BATCH, epochs=DDP_EPOCHS, lr=0.1,
                                 validation=make_validation(length=5, interval=1000), batch_norm=bool(precise_bn),
                                 representer=BoxRepresenter(thresh=0.0, box_thresh=0.0), measurer=MeanScoreMeasurer())
    if precise_bn:
        from training.precise_bn import PreciseBatchNorm
        experiment.train.precise_bn = PreciseBatchNorm(precise_bn)
    return experiment


def _ddp_main(out_dir: str) -> None:
    from training.trainer import Trainer
    torch.set_num_threads(1)
    rank = int(os.environ['RANK'])
    # DDP_NAN_RANK=r: rank r's first batch holds NaN images (the log of rank 0 must name rank r's files)
    nan_first_batch = os.environ.get('DDP_NAN_RANK') == str(rank)
    precise_bn = int(os.environ.get('DDP_PRECISE_BN', '0'))
    trainer = Trainer(ddp_experiment(os.path.join(out_dir, 'workspace'), nan_first_batch, precise_bn),
                      options(os.path.join(out_dir, 'workspace'), distributed=True, validate=True))
    summary = trainer.train()
    # train() hands back the model without its DistributedDataParallel wrapper
    state = {key: value.detach().clone() for key, value in trainer.model.state_dict().items()}
    torch.save({'state': state, 'summary': summary, 'world_size': summary['world_size'],
                'per_process_batch': trainer.loader.batch_size},
               os.path.join(out_dir, f'rank{rank}.pt'))


if __name__ == '__main__':
    _ddp_main(sys.argv[1])
