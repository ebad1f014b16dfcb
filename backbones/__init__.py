"""Backbone factories, looked up by name (``backbone: deformable_resnet18`` in an experiment).

Each factory returns an ``nn.Module`` whose forward gives (c2, c3, c4, c5) at strides 4, 8, 16, 32
and whose ``out_channels`` attribute lists their channel counts.
"""
from typing import Callable, Dict

from .mobilenetv3 import MobileNetV3, mobilenet_v3_large_torchvision, mobilenet_v3_small_torchvision
from .mobilenetv3_original import MobileNetV3Large, mobilenet_v3_large
from .resnet import (ResNet, deformable_resnet18, deformable_resnet34, deformable_resnet50,
                     deformable_resnet101, deformable_resnet152, resnet18, resnet34, resnet50,
                     resnet101, resnet152)

BACKBONES: Dict[str, Callable] = {
    factory.__name__: factory for factory in (
        resnet18, resnet34, resnet50, resnet101, resnet152,
        deformable_resnet18, deformable_resnet34, deformable_resnet50, deformable_resnet101,
        deformable_resnet152, mobilenet_v3_large, mobilenet_v3_large_torchvision,
        mobilenet_v3_small_torchvision)
}

__all__ = ['BACKBONES', 'ResNet', 'MobileNetV3', 'MobileNetV3Large', *BACKBONES]
