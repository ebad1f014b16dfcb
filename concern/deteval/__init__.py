"""DetEval as used by Total-Text: area recall / area precision with one-to-one, split and merge matches."""
from .deteval import DetEvalEvaluator

__all__ = ['DetEvalEvaluator']
