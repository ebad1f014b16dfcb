"""MakeICDARData: ``lines`` -> ``polygons`` / ``ignore_tags`` / ``shape``."""
from typing import Any, Dict

import numpy as np

from .data_process import DataProcess
from .pending_warp import image_hw


class MakeICDARData(DataProcess):
    """Also drops ``data_id`` (``filename`` remains), as the original did, so that training batches
    hold only tensors once FilterKeys has run."""

    def process(self, data: Dict[str, Any]) -> Dict[str, Any]:
        if 'lines' not in data:
            if 'polygons' not in data:
                raise KeyError(f"MakeICDARData: expected key 'lines' or 'polygons' in the sample, got {sorted(data)}")
            data['polygons'] = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in data['polygons']]
            data['ignore_tags'] = np.asarray(data.get('ignore_tags', [False] * len(data['polygons'])), dtype=bool)
        else:
            lines = data.pop('lines')
            data['polygons'] = [np.asarray(line['poly'], dtype=np.float32).reshape(-1, 2) for line in lines]
            data['ignore_tags'] = np.array([line['text'] == '###' for line in lines], dtype=bool)
        data.pop('data_id', None)
        if 'shape' not in data:
            data['shape'] = list(image_hw(data))
        return data
