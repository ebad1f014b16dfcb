"""Base class of the sample processes: ``process(data) -> data`` on the sample dict."""
from typing import Any, Dict


class DataProcess:
    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return self.process(data)
