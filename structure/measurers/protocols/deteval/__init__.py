"""DetEval as used by Total-Text: area recall / area precision with one-to-one, split and merge matches.

``DetEvalEvaluator(version='current')`` follows the official Deteval.py since its April 2019 one-to-one fix;
``version='pre-2019'`` the rule before it (``VERSIONS`` lists the allowed values).
"""
from .deteval import VERSIONS, DetEvalEvaluator

__all__ = ['DetEvalEvaluator', 'VERSIONS']
