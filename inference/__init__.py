"""The runtime: runners (``inference.runners``), preprocessing (``inference.preprocess``), the engine
(``inference.engine``), the ``--speed`` report (``inference.report``), the Python API ``TextDetector``
(``inference.detector``) and the int8 export (``inference.onnx_quantize``). Nothing here is imported by the
layers below it (docs/ARCHITECTURE.md)."""
