"""DBNet decoder: FPN over c2..c5, probability head, optional adaptive threshold head."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn


def init_decoder_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions, BatchNorm weight 1 and bias 1e-4.

    A transposed convolution gets the He standard deviation of its real fan-in, the input channels
    times the taps that reach one output pixel. The original called ``kaiming_normal_`` on it as on a
    convolution, which counts its *output* channels (1 for the last layer of each head): the initial
    logits then have a standard deviation of about 5, the probability maps start saturated and
    training from scratch spends its first hundreds of iterations undoing that. Initialisation only:
    trained checkpoints are unaffected.
    """
    if isinstance(module, nn.ConvTranspose2d):
        in_channels, _, kernel_h, kernel_w = module.weight.shape
        taps = max(1, kernel_h // module.stride[0]) * max(1, kernel_w // module.stride[1])
        nn.init.normal_(module.weight, 0.0, (2.0 / (in_channels // module.groups * taps)) ** 0.5)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.constant_(module.bias, 1e-4)


def set_prior_probability(head: nn.Sequential, probability: float) -> None:
    """Centre a head's initial logits on ``logit(probability)``: its last layer's bias = log(p / (1 - p)).

    The prior-probability initialisation of RetinaNet (Lin et al. 2017, section 4.1) applied to the probability map.
    With the default initialisation (``init_decoder_weights``) the map of a model with random weights starts near 0.5
    on every pixel, while the shrunk text regions cover a few per cent of a crop; the first iterations of a training
    from scratch then go to learning a constant (docs/training.md). The last layer's random weights still spread the
    logits around that centre (more with ``smooth``, whose last 1x1 convolution has no BatchNorm before it), so the
    map starts *near* ``probability``. Initialisation only: weights loaded later replace the bias.

    Raises ValueError unless 0 < probability < 1.
    """
    probability = float(probability)
    if not 0.0 < probability < 1.0:
        raise ValueError(f'prior_probability must lie strictly between 0 and 1, got {probability}')
    last = [m for m in head.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    assert last.bias is not None  # make_head's last layer always has a bias
    nn.init.constant_(last.bias, math.log(probability / (1.0 - probability)))


def _upsample_x2(in_channels: int, out_channels: int, smooth: bool, bias: bool) -> nn.Module:
    """x2 upsampling of a head: a 2x2 transposed convolution, or (smooth) bilinear + 3x3 conv.

    For the final 1-channel layer the smooth variant keeps ``in_channels`` through the 3x3 conv and
    ends with a 1x1 conv (with bias) to one channel, as the original intended.
    """
    if not smooth:
        return nn.ConvTranspose2d(in_channels, out_channels, 2, 2)
    if out_channels == 1:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
            nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=bias),
            nn.Conv2d(in_channels, 1, 1, bias=True))
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias))


def add_upsampled_x2(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """``fine + nearest_x2(coarse)`` bit for bit, without the up-sampled tensor: ``coarse`` is added in place to a
    (B, C, H/2, 2, W/2, 2) view of ``fine``, broadcast over each 2x2 block (nearest x2 repeats a value over its
    block; the sum is commutative). One pass over the finer map instead of three (up-sample, read both, write the
    sum) and one map of its size less in memory: at 1/4 resolution that is 256 channels of the whole image.
    ``fine`` is changed: pass a fresh tensor (a convolution's output), outside autograd (the decoder keeps the
    plain sum for training and tracing)."""
    batch, channels, height, width = coarse.shape
    blocks = fine.view(batch, channels, height, 2, width, 2)
    blocks.add_(coarse.view(batch, channels, height, 1, width, 1))
    return fine


def make_head(in_channels: int, inner_channels: int, smooth: bool, bias: bool) -> nn.Sequential:
    """Conv3x3 - BN - ReLU - up x2 - BN - ReLU - up x2 to one channel - Sigmoid (stride 4 -> 1)."""
    quarter = inner_channels // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, quarter, 3, padding=1, bias=bias),
        nn.BatchNorm2d(quarter),
        nn.ReLU(inplace=True),
        _upsample_x2(quarter, quarter, smooth, bias),
        nn.BatchNorm2d(quarter),
        nn.ReLU(inplace=True),
        _upsample_x2(quarter, 1, smooth, bias),
        nn.Sigmoid())


class InputSizeError(ValueError):
    """The network input's height or width is not a multiple of 32: the FPN adds each level to the next finer one
    up-sampled by 2, so every level must be exactly half the size of the one below it (strides 4 to 32)."""


class SegDetector(nn.Module):
    """Differentiable binarization decoder.

    Training returns {'binary', 'thresh', 'thresh_binary'} (the latter two only when ``adaptive``);
    inference returns the probability map (B, 1, H, W) and skips the threshold head.
    ``prior_probability`` (keyword only; default None, ``init_decoder_weights`` alone) centres the probability head's
    initial logits on logit(p): ``set_prior_probability``, for training from random weights.
    """

    def __init__(self, in_channels: Sequence[int] = (64, 128, 256, 512), inner_channels: int = 256,
                 k: float = 10, bias: bool = False, adaptive: bool = False, smooth: bool = False,
                 serial: bool = False, *, prior_probability: Optional[float] = None):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f'in_channels needs 4 entries (c2..c5), got {list(in_channels)}')
        if inner_channels % 4 != 0:
            raise ValueError(f'inner_channels must be divisible by 4, got {inner_channels}')
        self.in_channels = list(in_channels)
        self.k = k
        self.adaptive = adaptive
        self.serial = serial
        quarter = inner_channels // 4
        self.up5 = nn.Upsample(scale_factor=2, mode='nearest')
        self.up4 = nn.Upsample(scale_factor=2, mode='nearest')
        self.up3 = nn.Upsample(scale_factor=2, mode='nearest')
        self.in5 = nn.Conv2d(in_channels[3], inner_channels, 1, bias=bias)
        self.in4 = nn.Conv2d(in_channels[2], inner_channels, 1, bias=bias)
        self.in3 = nn.Conv2d(in_channels[1], inner_channels, 1, bias=bias)
        self.in2 = nn.Conv2d(in_channels[0], inner_channels, 1, bias=bias)
        self.out5 = nn.Sequential(nn.Conv2d(inner_channels, quarter, 3, padding=1, bias=bias),
                                  nn.Upsample(scale_factor=8, mode='nearest'))
        self.out4 = nn.Sequential(nn.Conv2d(inner_channels, quarter, 3, padding=1, bias=bias),
                                  nn.Upsample(scale_factor=4, mode='nearest'))
        self.out3 = nn.Sequential(nn.Conv2d(inner_channels, quarter, 3, padding=1, bias=bias),
                                  nn.Upsample(scale_factor=2, mode='nearest'))
        self.out2 = nn.Conv2d(inner_channels, quarter, 3, padding=1, bias=bias)
        self.binarize = make_head(inner_channels, inner_channels, smooth, bias)
        if adaptive:
            self.thresh = make_head(inner_channels + (1 if serial else 0), inner_channels, smooth, bias)
        self.apply(init_decoder_weights)
        if prior_probability is not None:
            set_prior_probability(self.binarize, prior_probability)

    def pyramid(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """[p5, p4, p3, p2], each (B, inner/4, H/4, W/4)."""
        if len(features) != 4:
            raise ValueError(f'expected 4 feature maps (c2..c5), got {len(features)}')
        c2, c3, c4, c5 = features
        for index, (feature, channels) in enumerate(zip(features, self.in_channels)):
            if feature.shape[1] != channels:
                raise ValueError(f'feature c{index + 2} has {feature.shape[1]} channels, decoder '
                                 f'in_channels expects {channels} (set decoder_args.in_channels)')
        for finer, coarser in ((c2, c3), (c3, c4), (c4, c5)):
            if tuple(finer.shape[2:]) != (2 * coarser.shape[2], 2 * coarser.shape[3]):
                raise InputSizeError(f'feature maps of sizes {tuple(finer.shape[2:])} and '
                                 f'{tuple(coarser.shape[2:])} are not a factor 2 apart; the input '
                                 'height and width must be multiples of 32')
        in5 = self.in5(c5)
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            out4 = self.up5(in5) + self.in4(c4)
            out3 = self.up4(out4) + self.in3(c3)
            out2 = self.up3(out3) + self.in2(c2)
        else:  # inference: the same sums without the up-sampled maps (add_upsampled_x2)
            out4 = add_upsampled_x2(self.in4(c4), in5)
            out3 = add_upsampled_x2(self.in3(c3), out4)
            out2 = add_upsampled_x2(self.in2(c2), out3)
        return [self.out5(in5), self.out4(out4), self.out3(out3), self.out2(out2)]

    def fuse(self, scales: List[torch.Tensor]) -> torch.Tensor:
        return torch.cat(scales, dim=1)

    def step_function(self, binary: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
        """1 / (1 + exp(-k (P - T))), computed as a sigmoid (no overflow)."""
        return torch.sigmoid(self.k * (binary - thresh))

    def forward(self, features: Sequence[torch.Tensor], training: Optional[bool] = None
                ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        if training is None:
            training = self.training
        fuse = self.fuse(self.pyramid(features))
        binary = self.binarize(fuse)
        if not training:
            return binary
        result = OrderedDict(binary=binary)
        if self.adaptive:
            if self.serial:
                fuse = torch.cat((fuse, nn.functional.interpolate(binary, fuse.shape[2:])), dim=1)
            thresh = self.thresh(fuse)
            result.update(thresh=thresh, thresh_binary=self.step_function(binary, thresh))
        return result
