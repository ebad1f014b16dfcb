"""Reading weight files, and saying how their keys loaded.

Every weight file the project reads (training checkpoints, plain state dicts, the original code base's released
files, torchvision ImageNet weights) goes through ``read_weights_file``: the project's one ``torch.load``, with
``weights_only=True`` (a file never runs code) onto the CPU. ``load_report`` is the one text of the keys that did
not load (missing, unexpected, shape mismatches, and those left out because ``HARMLESS_KEYS`` says they may be),
which strict loads raise with and non-strict loads return for the run's log.

It also holds the checkpoint format's names (``CHECKPOINT_FORMAT``, ``is_full_checkpoint``, the
``LAST_CHECKPOINT`` pointer file), which the weight loading (``structure.weights``), the training checkpoints
(``training.checkpoint``, ``training.model_saver``) and this reader share. It imports only torch: it is on the
ground floor (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

PathLike = Union[str, 'os.PathLike[str]']

# The checkpoint format (training.checkpoint.build_checkpoint writes it).
CHECKPOINT_FORMAT = 'dbnet-checkpoint'
CHECKPOINT_VERSION = 1
# The file in a run's model/ folder that names the newest checkpoint written (as detectron2's and fvcore's
# Checkpointer): written by training.model_saver.ModelSaver, read there and in read_weights_file's hint.
LAST_CHECKPOINT = 'last_checkpoint'


# The integrity record of a checkpoint: SHA-256 of every tensor's bytes, written at save, checked at every read.
CHECKSUM_KEY = 'checksum'
CHECKSUM_ALGORITHM = 'sha256'


class CorruptCheckpointError(ValueError):
    """A checkpoint whose tensors no longer match the checksum written with them (bit rot, a damaged copy)."""


def _tensor_leaves(value: Any, prefix: str = '') -> List[Tuple[str, torch.Tensor]]:
    """(path, tensor) of every tensor under ``value`` (nested dicts, lists, tuples), the checksum entry left out,
    in a fixed order (dict order as saved, which ``torch.load`` keeps)."""
    found: List[Tuple[str, torch.Tensor]] = []
    if isinstance(value, torch.Tensor):
        found.append((prefix or '<root>', value))
    elif isinstance(value, dict):
        for key, item in value.items():
            if not prefix and key == CHECKSUM_KEY:
                continue
            found.extend(_tensor_leaves(item, f'{prefix}/{key}' if prefix else str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.extend(_tensor_leaves(item, f'{prefix}/{index}' if prefix else str(index)))
    return found


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes as stored (its dtype, shape and values: a view hashes what it shows)."""
    data = tensor.detach()
    if data.device.type != 'cpu':
        data = data.cpu()
    data = data.contiguous().reshape(-1)
    digest = hashlib.sha256(f'{data.dtype}{tuple(tensor.shape)}'.encode())
    if data.numel():
        digest.update(data.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def checksum_of(content: Any) -> Dict[str, Any]:
    """The integrity record of ``content`` (a checkpoint dict): ``{'algorithm': 'sha256', 'tensors': {path:
    hex digest}}`` over every tensor in it. About 0.3 s for a ResNet-18 DBNet checkpoint with its Adam state on a
    2-core CPU (docs/training.md)."""
    return {'algorithm': CHECKSUM_ALGORITHM,
            'tensors': {path: tensor_digest(tensor) for path, tensor in _tensor_leaves(content)}}


def with_checksum(content: Dict[str, Any]) -> Dict[str, Any]:
    """``content`` with its integrity record under ``CHECKSUM_KEY`` (what the saver writes)."""
    sealed = {key: value for key, value in content.items() if key != CHECKSUM_KEY}
    sealed[CHECKSUM_KEY] = checksum_of(sealed)
    return sealed


def has_checksum(content: Any) -> bool:
    return isinstance(content, dict) and isinstance(content.get(CHECKSUM_KEY), dict)


def verify_checksum(content: Any, path: str) -> None:
    """Raise ``CorruptCheckpointError`` naming ``path`` and the damaged tensors when ``content``'s tensors do not
    match its integrity record; a file without one (the original code base's files, plain state dicts, this
    project's checkpoints from before the record) passes (``integrity_note`` says so)."""
    if not has_checksum(content):
        return
    record = content[CHECKSUM_KEY]
    if record.get('algorithm') != CHECKSUM_ALGORITHM or not isinstance(record.get('tensors'), dict):
        raise CorruptCheckpointError(f'{path}: damaged checkpoint: its checksum record is unreadable '
                                     f'(algorithm {record.get("algorithm")!r})')
    expected: Dict[str, str] = record['tensors']
    actual = {name: tensor_digest(tensor) for name, tensor in _tensor_leaves(content)}
    damaged = [name for name in expected if actual.get(name) != expected[name]]
    damaged += [name for name in actual if name not in expected]
    if damaged:
        shown = ', '.join(damaged[:5]) + (f' and {len(damaged) - 5} more' if len(damaged) > 5 else '')
        raise CorruptCheckpointError(
            f'{path}: damaged checkpoint: the SHA-256 of {len(damaged)} tensor(s) does not match the checksum '
            f'written with it ({shown}); the file changed after it was saved (bit rot, an incomplete copy). Use '
            'another checkpoint (e.g. an earlier periodic one of the same run) or copy it again')


def integrity_note(content: Any, path: str) -> Optional[str]:
    """A line for the log when ``content`` carries no checksum (its integrity cannot be checked), else None."""
    if has_checksum(content):
        return None
    return (f'{path}: no checksum (the original code base\'s files, plain state dicts and checkpoints written before '
            'checksums were recorded): its integrity is not verified')


def is_full_checkpoint(content: Any) -> bool:
    """Whether ``content`` (a file read by ``read_weights_file``) is a full training checkpoint of this project
    (``format: 'dbnet-checkpoint'``), as opposed to a plain state dict."""
    return isinstance(content, dict) and content.get('format') == CHECKPOINT_FORMAT


# ----------------------------------------------------------------------------------------------
# The one reader


def read_weights_file(path: PathLike) -> Any:
    """The content of a ``torch.save`` file, read with ``weights_only=True`` onto the CPU.

    A missing file is a ``FileNotFoundError`` naming it; a directory, or a file torch cannot read that way (not a
    torch file, truncated, or holding pickled Python objects other than tensors and plain values) a
    ``ValueError('<path>: not a PyTorch checkpoint (...)')``. torch's advice to retry with weights_only
    disabled is left out on purpose: this project never unpickles code from a file.

    A checkpoint carrying a checksum (``with_checksum``, written by the saver) is verified: a tensor whose bytes
    changed since the save is a ``CorruptCheckpointError`` (a ``ValueError``) naming the file and the tensors. A
    file without one loads (``integrity_note`` gives the line to log).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if os.path.isdir(path):
        pointer = os.path.join(path, LAST_CHECKPOINT)
        hint = ''
        if os.path.isfile(pointer):
            with open(pointer, encoding='utf-8') as stream:
                hint = f'; its newest checkpoint is {os.path.join(path, stream.read().strip())}'
        raise ValueError(f'{path}: not a PyTorch checkpoint (a directory{hint})')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except OSError:
        raise  # permission denied, I/O error: the OS message names the file already
    except Exception as error:  # torch raises many types for a foreign or damaged file
        raise ValueError(f'{path}: not a PyTorch checkpoint ({_why_unreadable(path, error)})') from None
    verify_checksum(content, path)
    return content


def _why_unreadable(path: str, error: Exception) -> str:
    """One line on why torch.load(weights_only=True) failed, without torch's weights_only=False advice."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1].strip()
        found = re.search(r'GLOBAL ([\w.]+)', text)
        if found:
            return (f'it holds a pickled Python object of type {found.group(1)}; only tensors and plain values '
                    'are read, a file never runs code')
    size = os.path.getsize(path)
    if size == 0:
        return 'the file is empty'
    if isinstance(error, EOFError):
        return f'the file ends early ({size} bytes): truncated'
    if 'zip archive' in text:
        return f'damaged zip archive, {size} bytes, probably truncated: {_first_sentence(text)}'
    return (f'{size} bytes that torch.load cannot read, not written by torch.save or damaged: '
            f'{type(error).__name__}: {_first_sentence(text) or "-"}')


def _first_sentence(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ''
    line = line.split('. ', 1)[0].rstrip('.')
    # never pass torch's invitation to disable weights_only on to the user
    return '' if 'weights_only' in line else line


# ----------------------------------------------------------------------------------------------
# Keys known to be harmless


class HarmlessKey(NamedTuple):
    """Keys that may be left out of a load without changing what the model computes.

    ``kind``: 'missing' (the model has it, the file not: it keeps its initialisation) or 'unexpected' (the file
    has it, the model not: dropped). ``pattern``: a regular expression searched in the key relative to the
    backbone (``fc.weight``, ``layer2.0.conv2_offset.weight``; a detector key is taken without its wrapper
    prefixes and ``backbone.``). ``where``: 'imagenet' (a backbone's ImageNet initialisation), 'checkpoint' (a
    detector's weights) or 'both'. ``origin``: where such keys come from, said in the report.
    """
    kind: str
    pattern: str
    where: str
    origin: str


HARMLESS_KEYS: Tuple[HarmlessKey, ...] = (
    HarmlessKey('unexpected', r'^fc\.', 'both',
                'the ResNet ImageNet classifier: in torchvision weight files, and in the original code base\'s '
                'checkpoints (model.module.backbone.fc.*); the detector has no classifier'),
    HarmlessKey('unexpected', r'^smooth\.', 'both',
                "a 1x1 convolution the original code base's ResNet defines and never runs; in its checkpoints"),
    HarmlessKey('unexpected', r'^classifier\.', 'imagenet',
                'the torchvision MobileNetV3 ImageNet classifier; the detector has no classifier'),
    HarmlessKey('missing', r'\.conv2_offset\.', 'imagenet',
                'deformable ResNet offset convolutions, absent from ImageNet weights: zero-initialised, so '
                'training starts from the regular 3x3 sampling grid'),
    HarmlessKey('missing', r'(^|\.)num_batches_tracked$', 'imagenet',
                'BatchNorm counters, absent from older torchvision files; unused with a fixed momentum'),
)
_HARMLESS_COMPILED = [(entry, re.compile(entry.pattern)) for entry in HARMLESS_KEYS]


def harmless_key(key: str, kind: str, where: str) -> Optional[HarmlessKey]:
    """The entry of ``HARMLESS_KEYS`` that lets ``key`` be ``kind`` ('missing' / 'unexpected') when loading
    ``where`` ('imagenet': keys relative to the backbone; 'checkpoint': detector keys without wrapper prefixes,
    e.g. ``backbone.fc.weight``), else None."""
    if where == 'checkpoint':
        if not key.startswith('backbone.'):
            return None
        key = key[len('backbone.'):]
    for entry, pattern in _HARMLESS_COMPILED:
        if entry.kind == kind and entry.where in (where, 'both') and pattern.search(key):
            return entry
    return None


# ----------------------------------------------------------------------------------------------
# The one report

LINES_PER_GROUP = 8


def load_report(header: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                mismatched: Sequence[str] = (),
                harmless: Sequence[Tuple[str, HarmlessKey]] = ()) -> str:
    """The text of a load: ``header``, then the missing keys, the unexpected keys and the shape mismatches
    (``'key: file (..), model (..)'``), each with its count, keys of one module on one line
    (``layer1.0.bn1.{weight, bias}``) and at most ``LINES_PER_GROUP`` lines per group, then the keys left out
    because they are harmless (``(key, HarmlessKey)`` pairs), grouped by entry with its origin."""
    lines = [header]
    for title, keys in (('missing keys', missing), ('unexpected keys', unexpected)):
        if keys:
            lines.append(f'  {title} ({len(keys)}):')
            lines.extend(f'    {line}' for line in _grouped(keys))
    if mismatched:
        lines.append(f'  shape mismatches ({len(mismatched)}):')
        lines.extend(f'    {item}' for item in mismatched[:LINES_PER_GROUP])
        if len(mismatched) > LINES_PER_GROUP:
            lines.append(f'    ... and {len(mismatched) - LINES_PER_GROUP} more')
    if harmless:
        by_entry: Dict[HarmlessKey, List[str]] = OrderedDict()
        for key, entry in harmless:
            by_entry.setdefault(entry, []).append(key)
        lines.append(f'  left out, known to be harmless ({len(harmless)}):')
        for entry, keys in by_entry.items():
            shown = _grouped(keys, limit=2)
            lines.append(f'    {entry.kind} {"; ".join(shown)} ({len(keys)}): {entry.origin}')
    return '\n'.join(lines)


def _grouped(keys: Sequence[str], limit: int = LINES_PER_GROUP) -> List[str]:
    """Keys of one module on one line, ``module.{a, b}`` (fvcore's habit), at most ``limit`` lines."""
    modules: Dict[str, List[str]] = OrderedDict()
    for key in keys:
        module, _, leaf = key.rpartition('.')
        modules.setdefault(module, []).append(leaf)
    lines = []
    for module, leaves in modules.items():
        prefix = f'{module}.' if module else ''
        lines.append(f'{prefix}{leaves[0]}' if len(leaves) == 1 else f'{prefix}{{{", ".join(leaves)}}}')
    if len(lines) > limit:
        rest = sum(len(leaves) for leaves in list(modules.values())[limit:])
        lines = lines[:limit] + [f'... and {rest} more in {len(lines) - limit} more modules']
    return lines
