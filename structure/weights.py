"""Weights into a model: key-for-key loading of state dicts and checkpoints, and the offset mode of the weights.

``load_model_state`` is the one way weights enter a ``SegDetectorModel`` (or any module): wrapper prefixes
(``module.`` / ``model.``) are matched, keys ``concern.checkpoint_io.HARMLESS_KEYS`` allows are left out and said,
every other missing, unexpected or misshapen key is an error. A deformable ResNet backbone gets the offset mode
its weights were trained with (``decide_offset_compat``; docs/model.md, "offset_compat").
``load_trained_model`` builds an experiment's model and loads a checkpoint into it for inference.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Protocol, Tuple, TypeGuard, Union

import torch
from torch import nn

from concern.checkpoint_io import HarmlessKey, harmless_key, integrity_note, is_full_checkpoint, load_report, \
    read_weights_file

WRAPPER_PREFIXES = ('module.', 'model.')


class StateDictMismatch(ValueError):
    """A state dict that does not fit the model key for key and shape for shape."""


class OffsetCompatDecision(NamedTuple):
    """The offset mode a model runs with (``backbones.resnet``: 'corrected' or 'original'), and why.

    ``matters`` is False when the backbone has no strided deformable convolution (ResNet-18/34), where both
    modes compute the same thing.
    """
    mode: str
    reason: str
    matters: bool

    def message(self) -> str:
        return f'deformable offsets: offset_compat {self.mode} ({self.reason})'


class OffsetCompatConflict(ValueError):
    """The experiment's explicit offset mode contradicts the one a checkpoint records."""


class LoadReport(NamedTuple):
    """What a load did: keys not loaded (``ignored``: left out as harmless, ``concern.checkpoint_io``), the
    offset mode applied, and ``text``, the report to log (``concern.checkpoint_io.load_report``), None when
    every key of the file and of the model loaded."""
    missing: List[str]
    unexpected: List[str]
    mismatched: List[str]
    ignored: List[str]
    offset_compat: Optional[OffsetCompatDecision] = None
    text: Optional[str] = None


class OffsetCompatBackbone(Protocol):
    """What the offset mode needs of a backbone (``backbones.resnet.ResNet``)."""
    offset_compat: str
    requested_offset_compat: str

    def set_offset_compat(self, mode: str) -> None: ...


def _is_offset_compat_backbone(module: nn.Module) -> TypeGuard[OffsetCompatBackbone]:
    return hasattr(module, 'set_offset_compat') and hasattr(module, 'requested_offset_compat')


def _offset_compat_backbones(model: nn.Module) -> List[OffsetCompatBackbone]:
    return [module for module in model.modules() if _is_offset_compat_backbone(module)]


def offset_compat_of(model: nn.Module) -> Optional[str]:
    """The offset mode ``model`` runs with ('corrected' / 'original'), None when it has no ResNet backbone."""
    modes = {module.offset_compat for module in _offset_compat_backbones(model)}
    if len(modes) > 1:
        raise ValueError(f'model has backbones with different offset modes: {sorted(modes)}')
    return modes.pop() if modes else None


def _recorded_offset_compat(checkpoint: Mapping[str, Any]) -> str:
    """The mode a full checkpoint of this project records: its ``offset_compat`` entry, else (checkpoints
    written before that entry existed) an explicit ``offset_compat`` in its config, else 'corrected' (this
    project's only mode before 'auto')."""
    recorded = checkpoint.get('offset_compat')
    if recorded is not None:
        return recorded
    found: List[Any] = []

    def search(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == 'offset_compat':
                    found.append(value)
                else:
                    search(value)
        elif isinstance(node, (list, tuple)):
            for item in node:
                search(item)

    search(checkpoint.get('config'))
    return 'original' if 'original' in found else 'corrected'


def _holds_offset_weights(content: Mapping[str, Any]) -> bool:
    return any('conv2_offset.' in str(key) for key in extract_state_dict(content))


def decide_offset_compat(model: nn.Module, content: Optional[Mapping[str, Any]], source: Optional[str] = None,
                         apply: bool = True) -> Optional[OffsetCompatDecision]:
    """Decide, and with ``apply`` set, the offset mode of ``model``'s ResNet backbone for the weights ``content``.

    The mode is a property of the weights (docs/model.md, "offset_compat"):
    - no weights (``content`` None: training from scratch or from ImageNet): 'corrected';
    - a full checkpoint of this project (``format: dbnet-checkpoint``): the mode it records;
    - a plain state dict (no project metadata, e.g. a released checkpoint of the original code base) holding
      deformable offset weights (``conv2_offset``): 'original'; without them: 'corrected'.
    An explicit ``offset_compat`` ('corrected' / 'original') in the experiment's ``backbone_args`` wins over the
    presumption for a plain state dict (the file records nothing), but contradicting what a checkpoint records
    is a ``ValueError`` naming both; so is a recorded value other than 'corrected' / 'original'. Returns None when
    the model has no ResNet backbone.
    """
    backbones_found = _offset_compat_backbones(model)
    if not backbones_found:
        return None
    requested = {module.requested_offset_compat for module in backbones_found}
    if len(requested) > 1:
        raise ValueError(f'model has backbones asking for different offset modes: {sorted(requested)}')
    requested_mode = requested.pop()
    where = source or 'the checkpoint'
    if content is None:
        if requested_mode == 'auto':
            mode, reason = 'corrected', 'no checkpoint: weights from scratch or ImageNet use the corrected offsets'
        else:
            mode, reason = requested_mode, 'set by the experiment (backbone_args.offset_compat)'
    elif is_full_checkpoint(content):
        mode = _recorded_offset_compat(content)
        if mode not in ('corrected', 'original'):
            raise ValueError(f"{where}: entry 'offset_compat' is {mode!r}, expected 'corrected' or 'original'")
        if requested_mode not in ('auto', mode):
            raise OffsetCompatConflict(f'the experiment sets backbone_args.offset_compat: {requested_mode}, '
                                       f'but {where} records that its weights were trained with offset_compat: '
                                       f'{mode}; remove the setting (the checkpoint decides) or use weights trained '
                                       f'with {requested_mode}')
        reason = f'recorded in {where}'
    elif requested_mode == 'auto' and not _holds_offset_weights(content):
        mode = 'corrected'
        reason = f'{where} holds no deformable offset convolution weights: nothing to read in the original way'
    elif requested_mode == 'auto':
        mode = 'original'
        reason = (f"{where} is a plain state dict without this project's metadata: weights of the original "
                  'code base, whose strided deformable Bottlenecks read offsets computed at the input resolution; '
                  "set backbone_args.offset_compat: corrected if these weights were trained otherwise")
    else:
        mode = requested_mode
        reason = f'set by the experiment (backbone_args.offset_compat); {where} records no mode'
    matters = any(getattr(module, 'offset_compat_matters', True) for module in backbones_found)
    decision = OffsetCompatDecision(mode, reason, matters)
    if apply:
        apply_offset_compat(model, decision)
    return decision


def apply_offset_compat(model: nn.Module, decision: Optional[OffsetCompatDecision]) -> None:
    """Run ``model``'s ResNet backbone(s) with the mode of ``decision`` (``decide_offset_compat``); None: nothing."""
    if decision is not None:
        for module in _offset_compat_backbones(model):
            module.set_offset_compat(decision.mode)


def offset_compat_note(decision: Optional[OffsetCompatDecision]) -> Optional[str]:
    """The line to log about ``decision``: its message where the mode changes the computation, else None."""
    return decision.message() if decision is not None and decision.matters else None


def _strip_wrappers(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split('.', 1)[1]
    return key


def extract_state_dict(state: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """The state dict inside a training checkpoint ({'model': ...}), or ``state`` itself."""
    if not isinstance(state, Mapping):
        raise TypeError(f'expected a state dict or a checkpoint dict, got {type(state).__name__}')
    if 'model' in state and isinstance(state['model'], Mapping):
        state = state['model']
    non_tensors = [key for key, value in state.items() if not torch.is_tensor(value)]
    if non_tensors:
        raise ValueError(f'not a state dict: entries {non_tensors[:5]} are not tensors')
    return state


def load_model_state(model: nn.Module, state: Mapping[str, Any], strict: bool = True,
                     source: Optional[str] = None) -> LoadReport:
    """Load a state dict or checkpoint into ``model`` (a SegDetectorModel or any nn.Module).

    The offset mode of a ResNet backbone follows the weights (``decide_offset_compat``; ``source`` names the
    file in its messages); the report's ``offset_compat`` says which mode applies and why.

    Keys may carry extra or fewer ``module.`` / ``model.`` prefixes (DataParallel, DDP, a bare
    detector) as long as each still names exactly one parameter. Keys ``HARMLESS_KEYS`` lets a detector
    checkpoint carry (the original's unused ``backbone.fc.*`` / ``backbone.smooth.*``) are left out and said in
    the report's ``text``. With ``strict`` any other missing key, unexpected key or shape mismatch raises
    ``StateDictMismatch`` with the report; otherwise the fitting entries are loaded and the report returned.
    """
    content = state
    state = extract_state_dict(state)
    decision = decide_offset_compat(model, content, source, apply=False)
    own = model.state_dict()
    by_canonical: Dict[str, str] = {}
    for key in own:
        canonical = _strip_wrappers(key)
        if canonical in by_canonical:
            raise ValueError(f'model keys {by_canonical[canonical]!r} and {key!r} differ only by '
                             'wrapper prefixes; cannot match state dict keys unambiguously')
        by_canonical[canonical] = key

    mapped: Dict[str, torch.Tensor] = {}
    source_of: Dict[str, str] = {}
    unexpected, ignored, mismatched = [], [], []
    harmless: List[Tuple[str, HarmlessKey]] = []
    for key, value in state.items():
        target = key if key in own else by_canonical.get(_strip_wrappers(key))
        if target is None:
            entry = harmless_key(_strip_wrappers(key), 'unexpected', 'checkpoint')
            if entry is not None:
                ignored.append(key)
                harmless.append((key, entry))
            else:
                unexpected.append(key)
            continue
        if target in source_of:
            raise StateDictMismatch(f'state dict keys {source_of[target]!r} and {key!r} both map to '
                                    f'model key {target!r}')
        source_of[target] = key
        if tuple(value.shape) != tuple(own[target].shape):
            mismatched.append(f'{key}: checkpoint {tuple(value.shape)}, model {tuple(own[target].shape)}')
            continue
        mapped[target] = value
    missing = [key for key in own if key not in source_of]
    if strict and (missing or unexpected or mismatched):
        raise StateDictMismatch(load_report(f'state dict does not fit {type(model).__name__}:', missing,
                                            unexpected, mismatched, harmless))
    text = None
    if missing or unexpected or mismatched or harmless:
        text = load_report(f'{source or "state dict"} -> {type(model).__name__}: loaded {len(mapped)} of '
                           f'{len(own)} tensors', missing, unexpected, mismatched, harmless)
    report = LoadReport(missing, unexpected, mismatched, ignored, decision, text)
    model.load_state_dict(mapped, strict=False)
    apply_offset_compat(model, decision)
    return report


def load_model_file(model: nn.Module, path: Union[str, os.PathLike], strict: bool = True) -> LoadReport:
    """``load_model_state`` from a file read by ``concern.checkpoint_io.read_weights_file`` (weights only, no
    code runs; a missing file is a ``FileNotFoundError``, an unreadable one a ``ValueError``, each naming it)."""
    state = read_weights_file(path)
    try:
        return load_model_state(model, state, strict=strict, source=os.fspath(path))
    except OffsetCompatConflict:
        raise
    except ValueError as error:
        raise type(error)(f'{os.fspath(path)}: {error}') from error


def build_without_pretrained(builder: Any) -> nn.Module:
    """``builder.build()`` (``structure.builder.Builder``) with the backbone's pretrained initialisation turned off
    (``pretrained=False, allow_download=False`` where the experiment asks for one): nothing is loaded or downloaded,
    for a model whose weights come from elsewhere or are never used."""
    backbone_args = dict(getattr(builder, 'model_args', {}).get('backbone_args') or {})
    if backbone_args.get('pretrained'):
        backbone_args.update(pretrained=False, allow_download=False)
        return builder.build(backbone_args=backbone_args)
    return builder.build()


def load_trained_model(builder: Any, checkpoint_path: Optional[str], device: Any = 'cpu',
                       log: Optional[Callable[[str], None]] = None) -> nn.Module:
    """A model from ``builder`` (``structure.builder.Builder``) with the weights of ``checkpoint_path``, in eval
    mode on ``device``.

    Every key and shape must fit: a checkpoint of another architecture, or a file that is not a checkpoint,
    is a ``ValueError`` naming the file; a missing file a ``FileNotFoundError``. Never random weights.
    A ResNet backbone runs with the offset mode of the weights (``decide_offset_compat``); where the mode changes
    the computation, ``log`` (default: standard error) gets one line saying which and why, and the keys left out
    as harmless (the original's unused ``backbone.fc`` / ``smooth``) are reported there too, and so is a file
    without a checksum (its integrity is not verified; a checkpoint with one is verified by the reader and a
    damaged one refused, naming the file).
    """
    if not checkpoint_path:
        raise ValueError('a checkpoint is required (--resume PATH)')
    content = read_weights_file(checkpoint_path)  # FileNotFoundError / ValueError naming the file
    # The checkpoint supplies every weight: never load (or download) ImageNet initialisation here.
    model = build_without_pretrained(builder)
    try:
        report = load_model_state(model, content, strict=True, source=checkpoint_path)
    except OffsetCompatConflict:
        raise
    except TypeError as error:  # a torch file holding something other than a dict
        raise ValueError(f'{checkpoint_path}: not a state dict or checkpoint: {error}') from error
    except ValueError as error:
        raise ValueError(f"{checkpoint_path}: does not fit this experiment's model ({builder.model}, "
                         f"{builder.model_args.get('backbone')}): {error}") from error
    for line in (offset_compat_note(report.offset_compat), report.text, integrity_note(content, checkpoint_path)):
        if line:
            (log or _print_to_stderr)(line)
    return model.to(torch.device(device)).eval()


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)
