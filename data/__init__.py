"""Data sets, ground-truth readers, sample processes and loaders."""
from .data_loader import DataLoader
from .image_dataset import ImageDataset
from .image_io import DataError, read_image
from .processes import *  # noqa: F401,F403
from .processes import __all__ as _process_names

__all__ = ['ImageDataset', 'DataLoader', 'DataError', 'read_image'] + list(_process_names)
