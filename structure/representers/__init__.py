"""Representers: network output -> detections."""
from .seg_detector_representer import SegDetectorRepresenter

__all__ = ['SegDetectorRepresenter']
