"""Decoders, looked up by name (``decoder: SegDetector`` in an experiment), and the losses."""
from typing import Dict

from .feature_attention import (ScaleChannelAttention, ScaleChannelSpatialAttention,
                                ScaleFeatureSelection, ScaleSpatialAttention)
from .loss_terms import BalanceCrossEntropyLoss, DiceLoss, MaskL1Loss
from .seg_detector import InputSizeError, SegDetector
from .seg_detector_asf import SegSpatialScaleDetector
from .seg_detector_loss import (LOSSES, AdaptiveDiceLoss, L1BalanceCELoss, L1BCEMiningLoss,
                                L1DiceLoss, build_loss)

DECODERS: Dict[str, type] = {cls.__name__: cls for cls in (SegDetector, SegSpatialScaleDetector)}

__all__ = ['DECODERS', 'LOSSES', 'build_loss', 'InputSizeError', 'SegDetector', 'SegSpatialScaleDetector',
           'ScaleFeatureSelection', 'ScaleSpatialAttention', 'ScaleChannelSpatialAttention',
           'ScaleChannelAttention', 'BalanceCrossEntropyLoss', 'DiceLoss', 'MaskL1Loss',
           'L1BalanceCELoss', 'L1BCEMiningLoss', 'L1DiceLoss', 'AdaptiveDiceLoss']
