"""Visualizers: images of a batch, its ground truth, detections and maps."""
from .seg_detector_visualizer import SegDetectorVisualizer

__all__ = ['SegDetectorVisualizer']
