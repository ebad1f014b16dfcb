"""Shared helpers of the tests/test_model_*.py files."""
from __future__ import annotations

import ast
import os
from typing import Dict, Tuple

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_DIRS = (
    os.path.join(REPO_ROOT, 'tests', 'fixtures', 'reference'),
    os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'reference'),
)


def reference_shapes(depth: int) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the original deformable ResNet-<depth> + adaptive SegDetector checkpoint."""
    return reference_shapes_named(f'original_state_dict_deformable_resnet{depth}.tsv')


def reference_shapes_named(name: str) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape, in file order, of the reference listing ``name`` (tab-separated key, shape)."""
    for directory in REFERENCE_DIRS:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            break
    else:
        pytest.skip(f'{name} not found in {REFERENCE_DIRS}')
    shapes = {}
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            key, shape = line.rstrip('\n').split('\t')
            parsed = ast.literal_eval(shape)
            assert isinstance(parsed, tuple), f'{path}:{number}: bad shape {shape!r}'
            shapes[key] = parsed
    return shapes


def random_state(shapes: Dict[str, Tuple[int, ...]], seed: int = 0) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(int(torch.randint(1, 1000, (), generator=generator)))
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


def synthetic_batch(batch: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Images with a bright rectangle per image and the matching DB targets."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, height, width, generator=generator) * 0.1
    gt = torch.zeros(batch, 1, height, width)
    thresh_map = torch.full((batch, height, width), 0.3)
    thresh_mask = torch.zeros(batch, height, width)
    for index in range(batch):
        top, left = 8 + 4 * index, 10 + 6 * index
        bottom, right = top + height // 4, left + width // 2
        image[index, :, top:bottom, left:right] += 1.0
        gt[index, 0, top:bottom, left:right] = 1
        thresh_mask[index, top - 3:bottom + 3, left - 3:right + 3] = 1
        thresh_map[index, top - 3:bottom + 3, left - 3:right + 3] = 0.7
        thresh_map[index, top + 3:bottom - 3, left + 3:right - 3] = 0.3
    return dict(image=image, gt=gt, mask=torch.ones(batch, height, width),
                thresh_map=thresh_map, thresh_mask=thresh_mask)
