"""Sample processes composable from the YAML experiment files (each ``process(data) -> data``)."""
from .augment_data import AugmentDetectionData
from .collect_fn import ICDARCollectFN
from .data_process import DataProcess
from .filter_keys import FilterKeys
from .make_border_map import MakeBorderMap
from .make_icdar_data import MakeICDARData
from .make_seg_detection_data import MakeSegDetectionData
from .normalize_image import NormalizeImage
from .random_crop_data import RandomCropData

__all__ = ['AugmentDetectionData', 'RandomCropData', 'MakeICDARData', 'MakeSegDetectionData', 'MakeBorderMap',
           'NormalizeImage', 'FilterKeys', 'ICDARCollectFN', 'DataProcess']
