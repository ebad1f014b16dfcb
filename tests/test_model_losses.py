"""Loss values on hand-made tensors (worked out by hand in the comments) and degenerate inputs."""
import math

import pytest
import torch

from decoders.loss_terms import BalanceCrossEntropyLoss, DiceLoss, MaskL1Loss
from decoders.seg_detector_loss import (LOSSES, AdaptiveDiceLoss, L1BalanceCELoss, L1BCEMiningLoss,
                                        L1DiceLoss, build_loss)


def bce_case():
    # Probabilities, one positive (0.8) and five negatives; the 0.9 negative lies outside the mask.
    pred = torch.tensor([[0.8, 0.3, 0.6], [0.1, 0.2, 0.9]]).view(1, 1, 2, 3)
    gt = torch.tensor([[1., 0, 0], [0, 0, 0]]).view(1, 1, 2, 3)
    mask = torch.tensor([[1., 1, 1], [1, 1, 0]]).view(1, 2, 3)
    return pred, gt, mask


def test_balanced_bce_keeps_the_three_hardest_negatives():
    pred, gt, mask = bce_case()
    # 1 positive -> at most 3 negatives: of -ln(0.7), -ln(0.4), -ln(0.9), -ln(0.8) the largest three
    # are -ln(0.4), -ln(0.7), -ln(0.8); the masked-out 0.9 (loss -ln(0.1)) must not be picked.
    expected = (-math.log(0.8) - math.log(0.4) - math.log(0.7) - math.log(0.8)) / (1 + 3 + 1e-6)
    assert BalanceCrossEntropyLoss()(pred, gt, mask).item() == pytest.approx(expected, rel=1e-5)


def test_balanced_bce_negative_ratio_and_origin_map():
    pred, gt, mask = bce_case()
    loss, origin = BalanceCrossEntropyLoss(negative_ratio=1.0)(pred, gt, mask, return_origin=True)
    assert loss.item() == pytest.approx((-math.log(0.8) - math.log(0.4)) / (2 + 1e-6), rel=1e-5)
    assert origin.shape == (1, 2, 3)
    assert origin[0, 1, 2].item() == pytest.approx(-math.log(0.1), rel=1e-5)


def test_dice_loss_by_hand():
    pred = torch.tensor([[0.5, 1.0], [0.0, 0.25]]).view(1, 1, 2, 2)
    gt = torch.tensor([[1., 1], [0, 0]]).view(1, 1, 2, 2)
    mask = torch.tensor([[1., 1], [1, 0]]).view(1, 2, 2)
    # intersection 0.5 + 1 = 1.5; sum(P M) = 1.5; sum(G M) = 2 -> 1 - 3 / 3.5
    assert DiceLoss()(pred, gt, mask).item() == pytest.approx(1 - 3 / 3.5, rel=1e-5)
    weights = torch.tensor([[2., 1], [1, 1]]).view(1, 2, 2)
    # weighted: intersection 1 + 1 = 2; sum(P M) = 2; sum(G M) = 3 -> 1 - 4 / 5
    assert DiceLoss()(pred, gt, mask, weights).item() == pytest.approx(0.2, rel=1e-5)


def test_mask_l1_by_hand_and_empty_mask():
    pred = torch.tensor([[0.3, 0.5], [0.9, 0.2]]).view(1, 1, 2, 2)
    target = torch.tensor([[0.5, 0.5], [0.4, 0.7]]).view(1, 2, 2)
    mask = torch.tensor([[1., 0], [1, 1]]).view(1, 2, 2)
    loss, metrics = MaskL1Loss()(pred, target, mask)
    assert loss.item() == pytest.approx((0.2 + 0.5 + 0.5) / 3, rel=1e-5)
    assert metrics['l1_loss'].item() == pytest.approx(0.4, rel=1e-5)
    leaf = pred.clone().requires_grad_(True)
    empty, _ = MaskL1Loss()(leaf, target, torch.zeros_like(mask))
    empty.backward()
    assert empty.item() == 0 and torch.equal(leaf.grad, torch.zeros_like(leaf))


def hand_prediction():
    binary = torch.tensor([[0.8, 0.3, 0.6], [0.1, 0.2, 0.9]]).view(1, 1, 2, 3)
    thresh = torch.tensor([[0.3, 0.5, 0.9], [0.2, 0.0, 0.0]]).view(1, 1, 2, 3)
    thresh_binary = torch.tensor([[0.5, 1.0, 0.0], [0.25, 0.0, 0.0]]).view(1, 1, 2, 3)
    return dict(binary=binary, thresh=thresh, thresh_binary=thresh_binary)


def hand_batch():
    _, gt, mask = bce_case()
    return dict(gt=gt, mask=mask,
                thresh_map=torch.tensor([[0.5, 0.5, 0.4], [0.7, 0.0, 0.0]]).view(1, 2, 3),
                thresh_mask=torch.tensor([[1., 0, 1], [1, 0, 0]]).view(1, 2, 3))


def test_l1_balance_ce_total_is_dice_plus_scaled_l1_and_bce():
    loss, metrics = L1BalanceCELoss()(hand_prediction(), hand_batch())
    bce = (-math.log(0.8) - math.log(0.4) - math.log(0.7) - math.log(0.8)) / (4 + 1e-6)
    l1 = (0.2 + 0.5 + 0.5) / 3
    # dice on thresh_binary: intersection 0.5; sum(P M) = 0.5 + 1 + 0 + 0.25 + 0 = 1.75; sum(G M) = 1
    dice = 1 - 2 * 0.5 / 2.75
    assert metrics['bce_loss'].item() == pytest.approx(bce, rel=1e-5)
    assert metrics['l1_loss'].item() == pytest.approx(l1, rel=1e-5)
    assert metrics['thresh_loss'].item() == pytest.approx(dice, rel=1e-5)
    assert loss.item() == pytest.approx(dice + 10 * l1 + 5 * bce, rel=1e-5)
    scaled, _ = L1BalanceCELoss(l1_scale=1, bce_scale=2)(hand_prediction(), hand_batch())
    assert scaled.item() == pytest.approx(dice + l1 + 2 * bce, rel=1e-5)


def test_l1_balance_ce_without_threshold_head_is_bce():
    pred = {'binary': hand_prediction()['binary']}
    loss, metrics = L1BalanceCELoss()(pred, hand_batch())
    assert loss.item() == pytest.approx(metrics['bce_loss'].item())
    assert set(metrics) == {'bce_loss'}


def test_dice_variants_by_hand():
    pred, batch = hand_prediction(), hand_batch()
    # dice on binary: intersection 0.8; sum(P M) = 0.8 + 0.3 + 0.6 + 0.1 + 0.2 = 2.0; sum(G M) = 1
    main = 1 - 1.6 / 3.0
    thresh = 1 - 1.0 / 2.75
    loss, metrics = AdaptiveDiceLoss()(pred, batch)
    assert metrics['main_loss'].item() == pytest.approx(main, rel=1e-5)
    assert loss.item() == pytest.approx(main + thresh, rel=1e-5)
    loss, metrics = L1DiceLoss()(pred, batch)
    assert loss.item() == pytest.approx(main + thresh + 10 * 0.4, rel=1e-5)


def test_bce_mining_weights_dice_by_normalised_bce_map():
    pred, batch = hand_prediction(), hand_batch()
    loss, metrics = L1BCEMiningLoss()(pred, batch)
    bce_map = -torch.log(torch.tensor([[0.8, 0.7, 0.4], [0.9, 0.8, 0.1]]))
    weights = 1 + (bce_map - bce_map.min()) / (bce_map.max() - bce_map.min() + 1e-6)
    mask = batch['mask'][0] * weights
    tb, gt = pred['thresh_binary'][0, 0], batch['gt'][0, 0]
    dice = 1 - 2 * (tb * gt * mask).sum() / ((tb * mask).sum() + (gt * mask).sum() + 1e-6)
    assert metrics['thresh_loss'].item() == pytest.approx(dice.item(), rel=1e-5)
    assert loss.item() == pytest.approx(dice.item() + 10 * 0.4 + 5 * metrics['bce_loss'].item(), rel=1e-5)


def leaf_prediction(height=4, width=5, fill=None):
    """Predictions as functions of leaf logits, so gradients can be checked."""
    logits = [torch.randn(1, 1, height, width, requires_grad=True) for _ in range(2)]
    if fill is not None:  # saturated probabilities
        logits = [torch.full((1, 1, height, width), fill, requires_grad=True) for _ in range(2)]
    binary, thresh = torch.sigmoid(logits[0]), torch.sigmoid(logits[1])
    return logits, dict(binary=binary, thresh=thresh, thresh_binary=torch.sigmoid(50 * (binary - thresh)))


@pytest.mark.parametrize('case', ['all_ignored', 'no_text', 'all_text', 'saturated'])
@pytest.mark.parametrize('loss_class', sorted(LOSSES))
def test_degenerate_targets_give_finite_losses_and_gradients(case, loss_class):
    torch.manual_seed(0)
    height, width = 4, 5
    gt = torch.zeros(1, 1, height, width)
    mask = torch.ones(1, height, width)
    thresh_mask = torch.ones(1, height, width)
    if case == 'all_ignored':
        gt[..., 1:3, 1:3] = 1
        mask.zero_()
        thresh_mask.zero_()
    elif case == 'all_text':
        gt.fill_(1)
    logits, pred = leaf_prediction(height, width, fill=60.0 if case == 'saturated' else None)
    batch = dict(gt=gt, mask=mask, thresh_map=torch.full((1, height, width), 0.5), thresh_mask=thresh_mask)
    loss, metrics = build_loss(loss_class)(pred, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(value) for value in metrics.values())
    for logit in logits:
        assert logit.grad is not None and torch.isfinite(logit.grad).all()
    if case == 'all_ignored' and loss_class == 'L1BalanceCELoss':
        # nothing counts: bce 0, l1 0, dice 1 - 0 / eps = 1
        assert metrics['bce_loss'].item() == 0 and metrics['l1_loss'].item() == 0
        assert loss.item() == pytest.approx(1.0)
    if case == 'all_text' and loss_class == 'L1BalanceCELoss':
        # only positives: the BCE is the mean of -ln(P) over all pixels
        expected = (-torch.log(pred['binary'])).sum() / (height * width + 1e-6)
        assert metrics['bce_loss'].item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_builder_and_shape_errors():
    assert isinstance(build_loss('L1BalanceCELoss', l1_scale=3), L1BalanceCELoss)
    with pytest.raises(ValueError, match='unknown loss_class .*L1BalanceCELoss'):
        build_loss('NoSuchLoss')
    pred, gt, mask = bce_case()
    with pytest.raises(ValueError, match=r'mask must be \(1, 2, 3\), got \(1, 2, 2\)'):
        BalanceCrossEntropyLoss()(pred, gt, mask[..., :2])
    with pytest.raises(KeyError, match='thresh_map'):
        L1BalanceCELoss()(hand_prediction(), dict(gt=gt, mask=mask))


def test_a_non_finite_prediction_gives_a_nan_loss_instead_of_raising():
    # review item 2: F.binary_cross_entropy refuses NaN (on CUDA with a device-side assert no trainer can catch):
    # the balanced BCE gives a NaN loss, which the trainer's finite-loss check sees
    pred, gt, mask = bce_case()
    for bad in (float('nan'), float('inf')):
        poisoned = pred.clone()
        poisoned[0, 0, 0, 1] = bad
        assert torch.isnan(BalanceCrossEntropyLoss()(poisoned, gt, mask))
        loss, origin = BalanceCrossEntropyLoss()(poisoned, gt, mask, return_origin=True)
        assert torch.isnan(loss) and origin.shape == (1, 2, 3) and torch.isnan(origin).all()
    prediction = hand_prediction()
    prediction['binary'] = prediction['binary'].clone().fill_(float('nan'))
    for loss_class in (L1BalanceCELoss, L1BCEMiningLoss):
        assert torch.isnan(loss_class()(prediction, hand_batch())[0])
