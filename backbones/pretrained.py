"""ImageNet initialisation from torchvision-format weight files, without surprise downloads.

``pretrained`` is ``False`` (random init), a path to a torchvision state-dict file, or ``True`` for
torchvision's standard cache file ``<torch hub dir>/checkpoints/<file name of the URL>``. That file is
downloaded only when ``allow_download`` is set; otherwise its absence is an error, never a silent
random initialisation.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, Mapping, Union

import torch
from torch import nn

Pretrained = Union[bool, str, os.PathLike, None]


def cached_weights_path(url: str) -> str:
    """Where torchvision keeps the file of ``url`` (``torch.hub.get_dir()/checkpoints/<name>``)."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))


def resolve_weights_file(pretrained: Pretrained, url: str, allow_download: bool = False) -> str:
    """The local file holding the weights asked for by ``pretrained`` (not False)."""
    if pretrained is True:
        path = cached_weights_path(url)
        if not os.path.isfile(path):
            if not allow_download:
                raise FileNotFoundError(
                    f'pretrained=True needs the torchvision weights file {path}, which does not exist. '
                    f'Copy it there (from {url}), pass its path as `pretrained: /path/to/file.pth`, '
                    f'or set `allow_download: true` to fetch it.')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.hub.download_url_to_file(url, path, progress=False)
        return path
    if isinstance(pretrained, (str, os.PathLike)):
        path = os.fspath(pretrained)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'pretrained weights file {path!r} does not exist')
        return path
    raise TypeError(f'pretrained must be False, True or a file path, got {pretrained!r}')


def load_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from ``path`` (plain, or under a 'state_dict' / 'model' key), loaded safely."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(state, Mapping):
        for key in ('state_dict', 'model'):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f'{path}: expected a state dict mapping names to tensors')
    return dict(state)


def load_pretrained(module: nn.Module, pretrained: Pretrained, url: str, allow_download: bool = False,
                    may_be_missing: Callable[[str], bool] = lambda key: False,
                    may_be_unused: Callable[[str], bool] = lambda key: False) -> None:
    """Copy ImageNet weights into ``module``.

    Keys accepted as absent from the file (``may_be_missing``: e.g. the zero-initialised DCN offset
    convolutions) keep their initialisation; keys of the file the module does not have
    (``may_be_unused``: e.g. the classifier) are dropped. Anything else is an error.
    """
    if pretrained is False or pretrained is None:
        return
    path = resolve_weights_file(pretrained, url, allow_download)
    weights = load_weights_file(path)
    own = module.state_dict()
    missing = [k for k in own if k not in weights and not k.endswith('num_batches_tracked')
               and not may_be_missing(k)]
    unexpected = [k for k in weights if k not in own and not may_be_unused(k)]
    mismatched = [f'{k}: file {tuple(weights[k].shape)}, model {tuple(own[k].shape)}'
                  for k in weights if k in own and weights[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(f'{path} does not fit {type(module).__name__}:' + _listing(
            (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', mismatched))))
    module.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)


def _listing(groups: Iterable) -> str:
    lines = []
    for title, items in groups:
        if items:
            lines.append(f'\n  {title} ({len(items)}):')
            lines.extend(f'\n    {item}' for item in items)
    return ''.join(lines)
