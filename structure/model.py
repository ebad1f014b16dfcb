"""``SegDetectorModel``: backbone + decoder + loss, with checkpoint-compatible state-dict keys.

The original wrapped the detector in (Distributed)DataParallel, so its checkpoints name parameters
``model.module.backbone.*`` and ``model.module.decoder.*``. Here ``model`` is a plain holder whose
``module`` attribute is the detector, giving the same keys without any parallel wrapper. Loading weights into it
(key matching, the offset mode of the weights) is ``structure.weights``' job.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

import backbones
import decoders
from decoders import seg_detector_loss

WRAPPER_PREFIXES = ('module.', 'model.')


def _lookup(kind: str, name: str, table: Mapping[str, Any]) -> Any:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f'unknown {kind} {name!r}; known: {", ".join(sorted(table))}')
    return table[name]


def build_backbone(name: str, **backbone_args: Any) -> nn.Module:
    return _lookup('backbone', name, backbones.BACKBONES)(**backbone_args)


class Detector(nn.Module):
    """Backbone features fed to the decoder."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    def forward(self, image: torch.Tensor, training: Optional[bool] = None):
        return self.decoder(self.backbone(image), training=training)


class ModuleHolder(nn.Module):
    """Holds the detector as ``module`` (the attribute name DataParallel uses), for checkpoint keys."""

    def __init__(self, module: Detector):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class SegDetectorModel(nn.Module):
    """DBNet / DBNet++ detector.

    backbone: a factory name of ``backbones`` (``deformable_resnet18``, ``mobilenet_v3_large``...).
    decoder: a class name of ``decoders`` (``SegDetector``, ``SegSpatialScaleDetector``); its
        ``in_channels`` defaults to the backbone's ``out_channels``.
    loss_class: a loss name of ``decoders.seg_detector_loss``.
    """

    def __init__(self, backbone: str, decoder: str, decoder_args: Optional[Dict[str, Any]] = None,
                 backbone_args: Optional[Dict[str, Any]] = None, loss_class: str = 'L1BalanceCELoss',
                 loss_args: Optional[Dict[str, Any]] = None):
        super().__init__()
        backbone_module = build_backbone(backbone, **dict(backbone_args or {}))
        decoder_args = dict(decoder_args or {})
        decoder_class = _lookup('decoder', decoder, decoders.DECODERS)
        out_channels = list(getattr(backbone_module, 'out_channels', []))
        if 'in_channels' in inspect.signature(decoder_class).parameters and out_channels:
            given = decoder_args.setdefault('in_channels', out_channels)
            if list(given) != out_channels:
                raise ValueError(f'decoder_args.in_channels is {list(given)} but backbone {backbone} '
                                 f'gives features with {out_channels} channels')
        self.model = ModuleHolder(Detector(backbone_module, decoder_class(**decoder_args)))
        self.criterion = seg_detector_loss.build_loss(loss_class, **dict(loss_args or {}))

    @property
    def backbone(self) -> nn.Module:
        return self.model.module.backbone

    @property
    def decoder(self) -> nn.Module:
        return self.model.module.decoder

    def forward(self, batch: Union[Mapping[str, Any], torch.Tensor], training: Optional[bool] = None):
        """Training: (loss, pred dict, metrics dict). Inference: probability map (B, 1, H, W)."""
        if training is None:
            training = self.training
        image = batch['image'] if isinstance(batch, Mapping) else batch
        if not torch.is_tensor(image) or image.dim() != 4:
            raise ValueError(f'expected an image tensor (B, 3, H, W), got '
                             f'{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}')
        parameter = next(self.parameters())
        image = image.to(parameter.device)
        if not image.is_floating_point():
            image = image.float()
        pred = self.model(image, training=training)
        if not training:
            return pred
        if not isinstance(batch, Mapping):
            raise ValueError('training needs a batch dict holding the targets (gt, mask, thresh_map, '
                             'thresh_mask), got a bare image tensor')
        targets = {key: value.to(parameter.device) if torch.is_tensor(value) else value
                   for key, value in batch.items()}
        loss, metrics = self.criterion(pred, targets)
        return loss, pred, metrics
