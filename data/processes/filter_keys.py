"""FilterKeys: keep only ``required`` keys, or drop ``superfluous`` ones."""
from typing import Any, Dict, Sequence

from .data_process import DataProcess


class FilterKeys(DataProcess):
    def __init__(self, required: Sequence[str] = (), superfluous: Sequence[str] = ()):
        self.required, self.superfluous = list(required), set(superfluous)

    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        if self.required:
            missing = [k for k in self.required if k not in data]
            if missing:
                raise KeyError(f'FilterKeys: required keys {missing} missing from the sample (has {sorted(data)})')
            return {k: data[k] for k in self.required}
        return {k: v for k, v in data.items() if k not in self.superfluous}
