"""Compatibility: ``from concern.detector import TextDetector`` (the README's import before the runtime got its own
package) keeps working. The API lives in ``inference.detector``; this module sits on the entry floor
(docs/ARCHITECTURE.md) and nothing in the project imports it."""
from inference.detector import Detections, TextDetector, source_name

__all__ = ['Detections', 'TextDetector', 'source_name']
