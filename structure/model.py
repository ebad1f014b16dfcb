"""``SegDetectorModel``: backbone + decoder + loss, with checkpoint-compatible state-dict keys.

The original wrapped the detector in (Distributed)DataParallel, so its checkpoints name parameters
``model.module.backbone.*`` and ``model.module.decoder.*``. Here ``model`` is a plain holder whose
``module`` attribute is the detector, giving the same keys without any parallel wrapper.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

import backbones
import decoders
from decoders import seg_detector_loss
from structure.checkpoint_io import HarmlessKey, harmless_key, load_report, read_weights_file

WRAPPER_PREFIXES = ('module.', 'model.')


def _lookup(kind: str, name: str, table: Mapping[str, Any]) -> Any:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f'unknown {kind} {name!r}; known: {", ".join(sorted(table))}')
    return table[name]


def build_backbone(name: str, **backbone_args: Any) -> nn.Module:
    return _lookup('backbone', name, backbones.BACKBONES)(**backbone_args)


def build_decoder(name: str, **decoder_args: Any) -> nn.Module:
    return _lookup('decoder', name, decoders.DECODERS)(**decoder_args)


class Detector(nn.Module):
    """Backbone features fed to the decoder."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    def forward(self, image: torch.Tensor, training: Optional[bool] = None):
        return self.decoder(self.backbone(image), training=training)


class ModuleHolder(nn.Module):
    """Holds a module as ``module`` (the attribute name DataParallel uses), for checkpoint keys."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class SegDetectorModel(nn.Module):
    """DBNet / DBNet++ detector.

    backbone: a factory name of ``backbones`` (``deformable_resnet18``, ``mobilenet_v3_large``...).
    decoder: a class name of ``decoders`` (``SegDetector``, ``SegSpatialScaleDetector``); its
        ``in_channels`` defaults to the backbone's ``out_channels``.
    loss_class: a loss name of ``decoders.seg_detector_loss``.
    """

    def __init__(self, backbone: str, decoder: str, decoder_args: Optional[Dict[str, Any]] = None,
                 backbone_args: Optional[Dict[str, Any]] = None, loss_class: str = 'L1BalanceCELoss',
                 loss_args: Optional[Dict[str, Any]] = None):
        super().__init__()
        backbone_module = build_backbone(backbone, **dict(backbone_args or {}))
        decoder_args = dict(decoder_args or {})
        decoder_class = _lookup('decoder', decoder, decoders.DECODERS)
        out_channels = list(getattr(backbone_module, 'out_channels', []))
        if 'in_channels' in inspect.signature(decoder_class).parameters and out_channels:
            given = decoder_args.setdefault('in_channels', out_channels)
            if list(given) != out_channels:
                raise ValueError(f'decoder_args.in_channels is {list(given)} but backbone {backbone} '
                                 f'gives features with {out_channels} channels')
        self.model = ModuleHolder(Detector(backbone_module, decoder_class(**decoder_args)))
        self.criterion = seg_detector_loss.build_loss(loss_class, **dict(loss_args or {}))

    @property
    def backbone(self) -> nn.Module:
        return self.model.module.backbone

    @property
    def decoder(self) -> nn.Module:
        return self.model.module.decoder

    def forward(self, batch: Union[Mapping[str, Any], torch.Tensor], training: Optional[bool] = None):
        """Training: (loss, pred dict, metrics dict). Inference: probability map (B, 1, H, W)."""
        if training is None:
            training = self.training
        image = batch['image'] if isinstance(batch, Mapping) else batch
        if not torch.is_tensor(image) or image.dim() != 4:
            raise ValueError(f'expected an image tensor (B, 3, H, W), got '
                             f'{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}')
        parameter = next(self.parameters())
        image = image.to(parameter.device)
        if not image.is_floating_point():
            image = image.float()
        pred = self.model(image, training=training)
        if not training:
            return pred
        if not isinstance(batch, Mapping):
            raise ValueError('training needs a batch dict holding the targets (gt, mask, thresh_map, '
                             'thresh_mask), got a bare image tensor')
        targets = {key: value.to(parameter.device) if torch.is_tensor(value) else value
                   for key, value in batch.items()}
        loss, metrics = self.criterion(pred, targets)
        return loss, pred, metrics


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
    """What a load did: keys not loaded (``ignored``: left out as harmless, ``structure.checkpoint_io``), the
    offset mode applied, and ``text``, the report to log (``structure.checkpoint_io.load_report``), None when
    every key of the file and of the model loaded."""
    missing: List[str]
    unexpected: List[str]
    mismatched: List[str]
    ignored: List[str]
    offset_compat: Optional[OffsetCompatDecision] = None
    text: Optional[str] = None


def _offset_compat_backbones(model: nn.Module) -> List[nn.Module]:
    return [module for module in model.modules() if hasattr(module, 'set_offset_compat')
            and hasattr(module, 'requested_offset_compat')]


def offset_compat_of(model: nn.Module) -> Optional[str]:
    """The offset mode ``model`` runs with ('corrected' / 'original'), None when it has no ResNet backbone."""
    modes = {module.offset_compat for module in _offset_compat_backbones(model)}
    if len(modes) > 1:
        raise ValueError(f'model has backbones with different offset modes: {sorted(modes)}')
    return modes.pop() if modes else None


def _recorded_offset_compat(checkpoint: Mapping[str, Any]) -> Optional[str]:
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
    from training.checkpoint import is_full_checkpoint
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
            raise OffsetCompatConflict(f'the experiment sets backbone_args.offset_compat: {requested_mode}, but {where} '
                             f'records that its weights were trained with offset_compat: {mode}; remove the '
                             f'setting (the checkpoint decides) or use weights trained with {requested_mode}')
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
    """``load_model_state`` from a file read by ``structure.checkpoint_io.read_weights_file`` (weights only, no
    code runs; a missing file is a ``FileNotFoundError``, an unreadable one a ``ValueError``, each naming it)."""
    state = read_weights_file(path)
    try:
        return load_model_state(model, state, strict=strict, source=os.fspath(path))
    except OffsetCompatConflict:
        raise
    except ValueError as error:
        raise type(error)(f'{os.fspath(path)}: {error}') from error
