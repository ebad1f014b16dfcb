"""Model structure: the detector (``structure.model``) and its experiment-facing parts."""
