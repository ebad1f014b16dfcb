"""``Builder(model, model_args)``: the experiment's recipe for a fresh model."""
from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, Optional

MODEL_MODULE = 'structure.model'


class Builder:
    """Names a model class of ``structure.model`` and its arguments; ``build()`` makes a new one."""

    def __init__(self, model: str = 'SegDetectorModel', model_args: Optional[Dict[str, Any]] = None):
        self.model = model
        self.model_args = dict(model_args or {})
        parameters = inspect.signature(self.model_class()).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            unknown = sorted(set(self.model_args) - set(parameters))
            if unknown:
                raise ValueError(f'model_args: unknown argument(s) {unknown} for {self.model} '
                                 f'(accepted: {", ".join(parameters)})')

    def model_class(self) -> type:
        from structure import model as module  # imported when first needed (torch and the network)
        cls = getattr(module, self.model, None)
        if not inspect.isclass(cls):
            known = sorted(name for name, obj in vars(module).items()
                           if inspect.isclass(obj) and obj.__module__ == module.__name__)
            raise ValueError(f'unknown model {self.model!r}; models in {MODEL_MODULE}: {known}')
        return cls

    def build(self, **overrides: Any) -> Any:
        """A new model; ``overrides`` replace entries of ``model_args`` (for example backbone arguments)."""
        args = copy.deepcopy(self.model_args)
        args.update(overrides)
        return self.model_class()(**args)

    def __repr__(self) -> str:
        return f'Builder(model={self.model!r}, model_args={self.model_args!r})'
