"""ResNet backbones (torchvision layout) with optional modulated deformable convolution (DCNv2).

Returns the outputs of layer1..layer4 (c2..c5, strides 4, 8, 16, 32). Parameter names follow the
original DB code base (``conv2_offset`` beside the deformable ``conv2``), so its checkpoints load.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
from torch import nn

from assets.ops.dcn import DeformConv, ModulatedDeformConv

from .pretrained import Pretrained, load_pretrained

# 'auto' (None means the same: no setting): decided by the weights loaded into the model
# (structure.weights.decide_offset_compat); 'corrected': the offset convolution uses the block's stride;
# 'original': the original code base's reading, for the weights it trained.
OFFSET_COMPAT_MODES = ('auto', 'corrected', 'original')


def normalize_offset_compat(value: Optional[str]) -> str:
    """``value`` as one of OFFSET_COMPAT_MODES (None means 'auto'); a ValueError otherwise."""
    if value is None:
        return 'auto'
    if value not in OFFSET_COMPAT_MODES:
        raise ValueError(f"offset_compat must be one of {list(OFFSET_COMPAT_MODES)} (or null for 'auto'), "
                         f'got {value!r}')
    return value
TORCHVISION_URLS = {
    'resnet18': 'https://download.pytorch.org/models/resnet18-f37072fd.pth',
    'resnet34': 'https://download.pytorch.org/models/resnet34-b627a593.pth',
    'resnet50': 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
    'resnet101': 'https://download.pytorch.org/models/resnet101-63fe2227.pth',
    'resnet152': 'https://download.pytorch.org/models/resnet152-394f9c45.pth',
}


def conv_output_size(size: int, stride: int, kernel: int = 3, padding: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def reinterpret_as_original(tensor: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
    """The original CUDA op's view of an offset/mask tensor computed at the wrong resolution.

    The op received (N, C, H, W) but indexed each image's buffer as (C, Ho, Wo), i.e. it read the
    first C*Ho*Wo values of that image's C*H*W values in memory order.
    """
    batch, channels = tensor.shape[:2]
    out_h, out_w = out_hw
    flat = tensor.reshape(batch, -1)
    return flat[:, :channels * out_h * out_w].reshape(batch, channels, out_h, out_w)


class _Block(nn.Module):
    """What BasicBlock and Bottleneck share: their 3x3 ``conv2``, deformable or not, which ``_make_conv2`` sets."""
    expansion: int
    conv2_stride: int
    with_dcn: bool
    conv2: nn.Module
    # deformable blocks only
    modulated: bool
    offset_compat: str
    offset_channels: int
    mask_channels: int
    conv2_offset: nn.Conv2d


def _make_conv2(block: _Block, planes: int, stride: int, dcn: Optional[dict]) -> None:
    """Attach ``conv2`` (3x3) and, for DCN, ``conv2_offset`` to ``block``."""
    block.with_dcn = dcn is not None
    if dcn is None:
        block.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        return
    groups = dcn['deformable_groups']
    block.modulated = dcn['modulated']
    block.offset_compat = dcn['offset_compat']
    block.offset_channels = 2 * 9 * groups
    block.mask_channels = 9 * groups if block.modulated else 0
    # The original built this without the block's stride (a bug for strided Bottlenecks); the
    # stride only changes the computation, not the parameters, so checkpoints fit either way.
    block.conv2_offset = nn.Conv2d(planes, block.offset_channels + block.mask_channels, 3,
                                   stride=stride, padding=1, bias=True)
    set_block_offset_compat(block, block.offset_compat)
    conv_class = ModulatedDeformConv if block.modulated else DeformConv
    block.conv2 = conv_class(planes, planes, 3, stride=stride, padding=1,
                             deformable_groups=groups, bias=False)


def set_block_offset_compat(block: _Block, mode: str) -> None:
    """Switch a deformable block between 'corrected' and 'original' offsets (parameters unchanged)."""
    block.offset_compat = mode
    offset_stride = 1 if mode == 'original' else block.conv2_stride
    block.conv2_offset.stride = (offset_stride, offset_stride)


def _run_conv2(block: _Block, x: torch.Tensor) -> torch.Tensor:
    if not block.with_dcn:
        return block.conv2(x)
    offset_mask = block.conv2_offset(x)
    offset = offset_mask[:, :block.offset_channels]
    mask = torch.sigmoid(offset_mask[:, block.offset_channels:]) if block.modulated else None
    if block.offset_compat == 'original' and block.conv2_stride != 1:
        out_hw = (conv_output_size(x.shape[2], block.conv2_stride),
                  conv_output_size(x.shape[3], block.conv2_stride))
        offset = reinterpret_as_original(offset, out_hw)
        mask = reinterpret_as_original(mask, out_hw) if mask is not None else None
    if block.modulated:
        return block.conv2(x, offset, mask)
    return block.conv2(x, offset)


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, dcn: Optional[dict] = None):
        super().__init__()
        self.conv2_stride = 1  # BasicBlock strides in conv1
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        _make_conv2(self, planes, 1, dcn)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(_run_conv2(self, out))
        return self.relu(out + identity)


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, dcn: Optional[dict] = None):
        super().__init__()
        self.conv2_stride = stride  # torchvision / ResNet v1.5 layout: the 3x3 conv strides
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        _make_conv2(self, planes, stride, dcn)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(_run_conv2(self, out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: Dict[str, Type[_Block]] = {'BasicBlock': BasicBlock, 'Bottleneck': Bottleneck}


class ResNet(nn.Module):
    """ResNet trunk returning (c2, c3, c4, c5).

    stage_with_dcn: which of layer1..layer4 use deformable ``conv2`` in every block.
    offset_compat: how a strided deformable Bottleneck computes its offsets and mask (docs/model.md).
        'corrected': the offset convolution uses the block's stride. 'original': the original
        code base's reading (offsets computed at the input resolution, the first Ho*Wo values of each
        channel-major buffer read as if they were the output's; its released ResNet-50 weights learnt
        with it). 'auto' (the default; None means the same): 'corrected' until weights are loaded through
        ``structure.model``, which then applies the mode the weights were trained with. BasicBlocks
        (ResNet-18/34) have no strided deformable convolution: the mode changes nothing there.
    """

    def __init__(self, block: str = 'BasicBlock', layers: Sequence[int] = (2, 2, 2, 2),
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 modulated: bool = True, deformable_groups: int = 1,
                 offset_compat: Optional[str] = 'auto'):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f'block must be one of {sorted(BLOCKS)}, got {block!r}')
        if len(layers) != 4 or len(stage_with_dcn) != 4:
            raise ValueError(f'layers and stage_with_dcn need 4 entries, got {list(layers)} and '
                             f'{list(stage_with_dcn)}')
        self.requested_offset_compat = normalize_offset_compat(offset_compat)
        effective = 'original' if self.requested_offset_compat == 'original' else 'corrected'
        block_class = BLOCKS[block]
        self.stage_with_dcn = tuple(bool(s) for s in stage_with_dcn)
        self.offset_compat = effective
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers)):
            dcn = None
            if self.stage_with_dcn[index]:
                dcn = dict(modulated=modulated, deformable_groups=deformable_groups,
                           offset_compat=offset_compat)
            stages.append(self._make_layer(block_class, planes, count, 1 if index == 0 else 2, dcn))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels: List[int] = [p * block_class.expansion for p in (64, 128, 256, 512)]
        self._init_weights()

    def _make_layer(self, block_class, planes: int, count: int, stride: int,
                    dcn: Optional[dict]) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block_class.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block_class.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block_class.expansion))
        blocks = [block_class(self.inplanes, planes, stride, downsample, dcn)]
        self.inplanes = planes * block_class.expansion
        blocks += [block_class(self.inplanes, planes, 1, None, dcn) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, DeformConv, ModulatedDeformConv)):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, (BasicBlock, Bottleneck)) and module.with_dcn:
                assert module.conv2_offset.bias is not None  # built with a bias (_make_conv2)
                nn.init.zeros_(module.conv2_offset.weight)
                nn.init.zeros_(module.conv2_offset.bias)

    def deformable_blocks(self) -> List[_Block]:
        return [m for m in self.modules() if isinstance(m, (BasicBlock, Bottleneck)) and m.with_dcn]

    @property
    def offset_compat_matters(self) -> bool:
        """True when some deformable block is strided, i.e. the two offset modes compute differently."""
        return any(block.conv2_stride != 1 for block in self.deformable_blocks())

    def set_offset_compat(self, mode: str) -> None:
        """Run with offset mode ``mode`` ('corrected' or 'original'); parameters and state dict are unchanged."""
        mode = normalize_offset_compat(mode)
        if mode == 'auto':
            raise ValueError("set_offset_compat: expected 'corrected' or 'original', got 'auto'")
        self.offset_compat = mode
        for block in self.deformable_blocks():
            set_block_offset_compat(block, mode)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


def _build(name: str, block: str, layers: Sequence[int], pretrained: Pretrained,
           allow_download: bool, **kwargs) -> ResNet:
    model = ResNet(block, layers, **kwargs)
    load_pretrained(model, pretrained, TORCHVISION_URLS[name], allow_download)
    return model


_DCN_STAGES = (False, True, True, True)


def resnet18(pretrained: Pretrained = False, allow_download: bool = False, **kwargs) -> ResNet:
    return _build('resnet18', 'BasicBlock', (2, 2, 2, 2), pretrained, allow_download, **kwargs)


def resnet34(pretrained: Pretrained = False, allow_download: bool = False, **kwargs) -> ResNet:
    return _build('resnet34', 'BasicBlock', (3, 4, 6, 3), pretrained, allow_download, **kwargs)


def resnet50(pretrained: Pretrained = False, allow_download: bool = False, **kwargs) -> ResNet:
    return _build('resnet50', 'Bottleneck', (3, 4, 6, 3), pretrained, allow_download, **kwargs)


def resnet101(pretrained: Pretrained = False, allow_download: bool = False, **kwargs) -> ResNet:
    return _build('resnet101', 'Bottleneck', (3, 4, 23, 3), pretrained, allow_download, **kwargs)


def resnet152(pretrained: Pretrained = False, allow_download: bool = False, **kwargs) -> ResNet:
    return _build('resnet152', 'Bottleneck', (3, 8, 36, 3), pretrained, allow_download, **kwargs)


def deformable_resnet18(pretrained: Pretrained = False, allow_download: bool = False,
                        stage_with_dcn: Sequence[bool] = _DCN_STAGES, **kwargs) -> ResNet:
    return resnet18(pretrained, allow_download, stage_with_dcn=stage_with_dcn, **kwargs)


def deformable_resnet34(pretrained: Pretrained = False, allow_download: bool = False,
                        stage_with_dcn: Sequence[bool] = _DCN_STAGES, **kwargs) -> ResNet:
    return resnet34(pretrained, allow_download, stage_with_dcn=stage_with_dcn, **kwargs)


def deformable_resnet50(pretrained: Pretrained = False, allow_download: bool = False,
                        stage_with_dcn: Sequence[bool] = _DCN_STAGES, **kwargs) -> ResNet:
    return resnet50(pretrained, allow_download, stage_with_dcn=stage_with_dcn, **kwargs)


def deformable_resnet101(pretrained: Pretrained = False, allow_download: bool = False,
                         stage_with_dcn: Sequence[bool] = _DCN_STAGES, **kwargs) -> ResNet:
    return resnet101(pretrained, allow_download, stage_with_dcn=stage_with_dcn, **kwargs)


def deformable_resnet152(pretrained: Pretrained = False, allow_download: bool = False,
                         stage_with_dcn: Sequence[bool] = _DCN_STAGES, **kwargs) -> ResNet:
    return resnet152(pretrained, allow_download, stage_with_dcn=stage_with_dcn, **kwargs)
