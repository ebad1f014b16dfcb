"""ImageNet initialisation from torchvision-format weight files, without surprise downloads.

``pretrained`` is ``False`` (random init), a path to a torchvision state-dict file, or ``True`` for
torchvision's standard cache file ``<torch hub dir>/checkpoints/<file name of the URL>``. That file is
downloaded only when ``allow_download`` is set; otherwise its absence is an error, never a silent
random initialisation.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from concern.checkpoint_io import HarmlessKey, harmless_key, load_report, read_weights_file

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
    """A state dict from ``path`` (plain, or under a 'state_dict' / 'model' key), read by the project's one
    reader (``concern.checkpoint_io.read_weights_file``: weights only, no code runs)."""
    state = read_weights_file(path)
    if isinstance(state, Mapping):
        for key in ('state_dict', 'model'):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f'{path}: expected a state dict mapping names to tensors')
    return dict(state)


def load_pretrained(module: nn.Module, pretrained: Pretrained, url: str, allow_download: bool = False
                    ) -> Optional[str]:
    """Copy ImageNet weights into ``module``; returns the load report for the run's log, None if every key fit.

    Keys that ``concern.checkpoint_io.HARMLESS_KEYS`` lets an ImageNet file lack (the zero-initialised DCN
    offset convolutions) keep their initialisation; keys of the file it lets the module lack (the classifier) are
    dropped. Both are said in the report, which is also kept on the module as ``pretrained_report`` (with the
    file as ``pretrained_file``) so that the trainer logs it (``training.checkpoint.Checkpoint.restore``). Any
    other missing key, unexpected key or shape mismatch is a ``ValueError`` carrying the report.
    """
    if pretrained is False or pretrained is None:
        return None
    path = resolve_weights_file(pretrained, url, allow_download)
    weights = load_weights_file(path)
    own = module.state_dict()
    missing: List[str] = []
    unexpected: List[str] = []
    harmless: List[Tuple[str, HarmlessKey]] = []
    for keys, kind, other in ((own, 'missing', weights), (weights, 'unexpected', own)):
        for key in keys:
            if key in other:
                continue
            entry = harmless_key(key, kind, 'imagenet')
            if entry is not None:
                harmless.append((key, entry))
            else:
                (missing if kind == 'missing' else unexpected).append(key)
    mismatched = [f'{k}: file {tuple(weights[k].shape)}, model {tuple(own[k].shape)}'
                  for k in weights if k in own and weights[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(load_report(f'{path} does not fit {type(module).__name__}:', missing, unexpected,
                                     mismatched, harmless))
    module.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
    report = None
    if harmless:
        loaded = sum(1 for key in own if key in weights)
        report = load_report(f'ImageNet initialisation {path} -> {type(module).__name__}: loaded {loaded} of '
                             f'{len(own)} tensors', harmless=harmless)
    # torch types module attributes as Tensor | Module; plain values are allowed (kept in the instance's __dict__)
    module.pretrained_file = path  # type: ignore[assignment]
    module.pretrained_report = report  # type: ignore[assignment]
    return report
