import math

import pytest
import torch

from segedge.core.errors import SegedgeError
from segedge.train.losses import (
    LOSSES,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
    WeightedSum,
    build_loss,
)

LN2 = math.log(2)


def logits_from_probs(*pixels):
    """A 1×C×1×P logit tensor whose softmax is exactly the given per-pixel probabilities (logits = log p)."""
    return torch.tensor(pixels, dtype=torch.float64).log().T.reshape(1, len(pixels[0]), 1, len(pixels))


def labels(*values):
    return torch.tensor([[list(values)]])


# Three classes, two pixels:  a: p = (1/2, 1/4, 1/4), target 0      b: p = (1/4, 1/4, 1/2), target 1
CE_LOGITS = logits_from_probs((0.5, 0.25, 0.25), (0.25, 0.25, 0.5))
CE_TARGET = labels(0, 1)
# Two classes, two pixels:    a: p = (0.8, 0.2), target 0            b: p = (0.4, 0.6), target 1
DICE_LOGITS = logits_from_probs((0.8, 0.2), (0.4, 0.6))
DICE_TARGET = labels(0, 1)


def test_cross_entropy_by_hand():
    # -log p_t: a -> ln 2, b -> ln 4 = 2 ln 2; mean = 1.5 ln 2
    assert CrossEntropyLoss()(CE_LOGITS, CE_TARGET).item() == pytest.approx(1.5 * LN2)


def test_cross_entropy_class_weights_by_hand():
    # weights (1, 2, 3): a has w = 1, b has w = 2; (1 * ln 2 + 2 * 2 ln 2) / (1 + 2) = 5 ln 2 / 3
    loss = CrossEntropyLoss(weight=[1, 2, 3])(CE_LOGITS, CE_TARGET)
    assert loss.item() == pytest.approx(5 * LN2 / 3)


def test_cross_entropy_label_smoothing_by_hand():
    # target (1-ε) one-hot + ε/C, ε = 0.3, C = 3: per pixel 0.7 (-log p_t) + 0.1 sum_c (-log p_c)
    # both pixels have {1/2, 1/4, 1/4}: sum_c -log p_c = ln 2 + 2 ln 2 + 2 ln 2 = 5 ln 2, so 0.1 * 5 ln 2 = 0.5 ln 2
    # a: 0.7 ln 2 + 0.5 ln 2 = 1.2 ln 2      b: 0.7 * 2 ln 2 + 0.5 ln 2 = 1.9 ln 2      mean 1.55 ln 2
    loss = CrossEntropyLoss(label_smoothing=0.3)(CE_LOGITS, CE_TARGET)
    assert loss.item() == pytest.approx(1.55 * LN2)


def test_dice_linear_denominator_by_hand():
    # class 0: p = (0.8, 0.4), g = (1, 0): 2 sum pg = 1.6, sum p + sum g = 1.2 + 1 = 2.2 -> 8/11
    # class 1: p = (0.2, 0.6), g = (0, 1): 2 sum pg = 1.2, sum p + sum g = 0.8 + 1 = 1.8 -> 2/3
    # loss = 1 - (8/11 + 2/3) / 2 = 10/33
    assert DiceLoss(smooth=0)(DICE_LOGITS, DICE_TARGET).item() == pytest.approx(10 / 33)


def test_dice_squared_denominator_by_hand():
    # class 0: sum p² + sum g² = 0.64 + 0.16 + 1 = 1.8 -> 1.6 / 1.8 = 8/9
    # class 1: sum p² + sum g² = 0.04 + 0.36 + 1 = 1.4 -> 1.2 / 1.4 = 6/7
    # loss = 1 - (8/9 + 6/7) / 2 = 8/63
    assert DiceLoss(squared=True, smooth=0)(DICE_LOGITS, DICE_TARGET).item() == pytest.approx(8 / 63)


def test_dice_smoothing_by_hand():
    # s = 1: class 0 (1.6 + 1) / (2.2 + 1) = 13/16, class 1 (1.2 + 1) / (1.8 + 1) = 11/14
    # loss = 1 - (13/16 + 11/14) / 2 = 1 - 179/224 = 45/224
    assert DiceLoss(smooth=1)(DICE_LOGITS, DICE_TARGET).item() == pytest.approx(45 / 224)


def test_focal_by_hand():
    # γ = 2: (1 - p_t)² (-log p_t): a (1/2)² ln 2 = 0.25 ln 2, b (3/4)² 2 ln 2 = 1.125 ln 2; mean 0.6875 ln 2
    assert FocalLoss(gamma=2)(CE_LOGITS, CE_TARGET).item() == pytest.approx(0.6875 * LN2)
    # scalar α = 0.25 scales every pixel: 0.25 * 0.6875 ln 2
    assert FocalLoss(gamma=2, alpha=0.25)(CE_LOGITS, CE_TARGET).item() == pytest.approx(0.171875 * LN2)
    # α per class (0.25, 0.5, 1): a (class 0) * 0.25, b (class 1) * 0.5; (0.0625 + 0.5625) / 2 = 0.3125 ln 2
    per_class = FocalLoss(gamma=2, alpha=[0.25, 0.5, 1.0])(CE_LOGITS, CE_TARGET)
    assert per_class.item() == pytest.approx(0.3125 * LN2)


def test_tversky_by_hand():
    # α = 0.3 (FP), β = 0.7 (FN), s = 0
    # class 0: TP = 0.8, FP = 0.4 (pixel b), FN = 0.2 (pixel a): 0.8 / (0.8 + 0.12 + 0.14) = 40/53
    # class 1: TP = 0.6, FP = 0.2 (pixel a), FN = 0.4 (pixel b): 0.6 / (0.6 + 0.06 + 0.28) = 30/47
    # loss = 1 - (40/53 + 30/47) / 2 = 1 - 1735/2491 = 756/2491
    loss = TverskyLoss(alpha=0.3, beta=0.7, smooth=0)(DICE_LOGITS, DICE_TARGET)
    assert loss.item() == pytest.approx(756 / 2491)


# Lovász: two 1×3 images, two classes; class-0 probabilities below, class 1 is 1 - p0.
LOVASZ_LOGITS = torch.cat([logits_from_probs((0.9, 0.1), (0.4, 0.6), (0.3, 0.7)),
                           logits_from_probs((0.5, 0.5), (0.5, 0.5), (0.5, 0.5))])
LOVASZ_TARGET = torch.cat([labels(0, 0, 1), labels(1, 1, 1)])


def test_lovasz_single_image_by_hand():
    # image A, target (0, 0, 1), p0 = (0.9, 0.4, 0.3). Errors |g - p| are (0.1, 0.6, 0.3) for both classes.
    # class 0: sorted errors 0.6, 0.3, 0.1 with g = 1, 0, 1 (|G| = 2)
    #   intersection |G \ top_i| = 1, 1, 0; union |G ∪ top_i| = 2, 3, 3; J = 1/2, 2/3, 1; ΔJ = 1/2, 1/6, 1/3
    #   loss0 = 0.6/2 + 0.3/6 + 0.1/3 = 23/60
    # class 1: sorted errors 0.6, 0.3, 0.1 with g = 0, 1, 0 (|G| = 1)
    #   intersection 1, 0, 0; union 2, 2, 3; J = 1/2, 1, 1; ΔJ = 1/2, 1/2, 0; loss1 = 0.3 + 0.15 = 27/60
    # mean over the two present classes: 25/60 = 5/12
    loss = LovaszSoftmaxLoss()(LOVASZ_LOGITS[:1], LOVASZ_TARGET[:1])
    assert loss.item() == pytest.approx(5 / 12)


def test_lovasz_only_present_classes_count():
    # image B, target (1, 1, 1), p1 = 0.5 everywhere; class 0 absent, so only class 1 counts:
    # errors 0.5 × 3, g = 1, 1, 1: intersection 2, 1, 0; union 3, 3, 3; ΔJ = 1/3 each; loss = 0.5
    loss = LovaszSoftmaxLoss()(LOVASZ_LOGITS[1:], LOVASZ_TARGET[1:])
    assert loss.item() == pytest.approx(0.5)


def test_lovasz_per_image_and_per_batch_by_hand():
    # per image: (5/12 + 1/2) / 2 = 11/24
    per_image = LovaszSoftmaxLoss(per_image=True)(LOVASZ_LOGITS, LOVASZ_TARGET)
    assert per_image.item() == pytest.approx(11 / 24)
    # per batch, six pixels (A then B), p0 = (0.9, 0.4, 0.3, 0.5, 0.5, 0.5), target (0, 0, 1, 1, 1, 1)
    # class 0: errors 0.1, 0.6, 0.3, 0.5, 0.5, 0.5; sorted 0.6, 0.5, 0.5, 0.5, 0.3, 0.1 with g = 1, 0, 0, 0, 0, 1
    #   intersection 1, 1, 1, 1, 1, 0; union 2, 3, 4, 5, 6, 6; J = 1/2, 2/3, 3/4, 4/5, 5/6, 1
    #   ΔJ = 1/2, 1/6, 1/12, 1/20, 1/30, 1/6; loss0 = 0.3 + 0.5 (1/6 + 1/12 + 1/20) + 0.3/30 + 0.1/6 = 143/300
    # class 1: same errors; sorted with g = 0, 1, 1, 1, 1, 0 (|G| = 4)
    #   intersection 4, 3, 2, 1, 0, 0; union 5, 5, 5, 5, 5, 6; ΔJ = 1/5 × 5, then 0
    #   loss1 = (0.6 + 0.5 × 3 + 0.3) / 5 = 144/300
    # mean (143 + 144) / 600 = 287/600
    per_batch = LovaszSoftmaxLoss(per_image=False)(LOVASZ_LOGITS, LOVASZ_TARGET)
    assert per_batch.item() == pytest.approx(287 / 600)


def test_lovasz_of_a_perfect_prediction_is_zero():
    target = torch.randint(0, 4, (2, 5, 6))
    logits = 40.0 * torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    for per_image in (False, True):
        assert LovaszSoftmaxLoss(per_image=per_image)(logits, target).item() == pytest.approx(0, abs=1e-6)


# ---- identities -----------------------------------------------------------------------------------------

def random_batch(seed=0, n=2, c=4, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=torch.float64), torch.randint(0, c, (n, h, w), generator=g)


def test_tversky_half_half_is_dice_with_the_linear_denominator():
    logits, target = random_batch()
    tversky = TverskyLoss(alpha=0.5, beta=0.5, smooth=0)(logits, target)
    assert tversky.item() == pytest.approx(DiceLoss(smooth=0)(logits, target).item(), rel=1e-12)
    assert tversky.item() != pytest.approx(DiceLoss(squared=True, smooth=0)(logits, target).item(), rel=1e-3)
    # smoothing: Tversky adds s to TP where Dice adds it to 2 TP, so Tversky(s) = Dice(2 s)
    smoothed = TverskyLoss(alpha=0.5, beta=0.5, smooth=0.5)(logits, target)
    assert smoothed.item() == pytest.approx(DiceLoss(smooth=1.0)(logits, target).item(), rel=1e-12)


def test_focal_with_gamma_zero_and_no_alpha_is_cross_entropy():
    logits, target = random_batch()
    target[0, 0, :3] = 255
    assert FocalLoss(gamma=0)(logits, target).item() == pytest.approx(CrossEntropyLoss()(logits, target).item())


def test_weighted_sum_is_the_weighted_sum_of_its_terms():
    logits, target = random_batch()
    combined = build_loss("0.5*ce+1.5*dice+lovasz", num_classes=4)
    assert isinstance(combined, WeightedSum)
    expected = (0.5 * CrossEntropyLoss()(logits, target) + 1.5 * DiceLoss()(logits, target)
                + LovaszSoftmaxLoss()(logits, target))
    assert combined(logits, target).item() == pytest.approx(expected.item())


# Contract tests over the registry: a new loss is covered the day it is added.
ALL_LOSSES = [
    pytest.param(lambda: loss_cls(), id=name) for name, loss_cls in LOSSES.items()
] + [
    pytest.param(lambda: CrossEntropyLoss(weight=[1, 2, 3, 4], label_smoothing=0.1), id="ce-weighted-smoothed"),
    pytest.param(lambda: DiceLoss(squared=True), id="dice-squared"),
    pytest.param(lambda: FocalLoss(gamma=0.5, alpha=[0.1, 0.2, 0.3, 0.4]), id="focal-per-class-alpha"),
    pytest.param(lambda: LovaszSoftmaxLoss(per_image=True), id="lovasz-per-image"),
    pytest.param(lambda: build_loss("0.5*ce+dice", 4), id="weighted-sum"),
]


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_void_pixels_change_nothing(make):
    loss = make()
    logits, target = random_batch()
    # widen each image by 3 columns (and add a third image) of void pixels with wild logits
    wide_logits = torch.cat([logits, 50 * torch.randn(2, 4, 5, 3, dtype=torch.float64)], dim=3)
    wide_target = torch.cat([target, torch.full((2, 5, 3), 255)], dim=2)
    wide_logits = torch.cat([wide_logits, 50 * torch.randn(1, 4, 5, 9, dtype=torch.float64)])
    wide_target = torch.cat([wide_target, torch.full((1, 5, 9), 255)])
    assert loss(wide_logits, wide_target).item() == pytest.approx(loss(logits, target).item(), rel=1e-9)


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_gradients_are_finite_including_confident_and_all_void_batches(make):
    loss = make()
    logits, target = random_batch(seed=1)
    logits = logits.float()
    logits[0, :, 0, 0] = torch.tensor([80.0, -80.0, 0.0, 0.0])  # a saturated pixel
    target[0, 0, 0] = 0
    target[1, 2] = 255
    for batch_target in (target, torch.full_like(target, 255)):
        x = logits.clone().requires_grad_(True)
        value = loss(x, batch_target)
        value.backward()
        assert torch.isfinite(value) and value.item() >= 0
        assert torch.isfinite(x.grad).all()
        assert x.grad[1, :, 2].abs().max() == 0  # void pixels get no gradient


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_a_better_prediction_has_a_lower_loss(make):
    loss = make()
    target = torch.randint(0, 4, (2, 6, 6), generator=torch.Generator().manual_seed(3))
    onehot = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert loss(4 * onehot, target) < loss(torch.zeros_like(onehot), target) < loss(-4 * onehot, target)


# ---- the spec parser --------------------------------------------------------------------------------------

def test_build_loss_single_names_and_parameters():
    assert type(build_loss("ce", 4)) is CrossEntropyLoss
    assert type(build_loss("Dice", 4)) is DiceLoss
    focal = build_loss("focal:gamma=2", 4)
    assert isinstance(focal, FocalLoss) and focal.gamma == 2 and focal.alpha is None
    tversky = build_loss("tversky:alpha=0.3,beta=0.7", 4)
    assert (tversky.alpha, tversky.beta) == (0.3, 0.7)
    assert build_loss("dice:squared=true,smooth=1e-3", 4).squared is True
    assert build_loss("lovasz:per_image=true", 4, ignore_index=0).ignore_index == 0
    assert build_loss("focal:alpha=[0.1,0.2,0.3,0.4],gamma=1", 4).alpha.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert build_loss("ce:weight=[1,2,3,4],label_smoothing=0.1", 4).weight.tolist() == [1, 2, 3, 4]


def test_build_loss_sums_and_weights():
    loss = build_loss("0.5*ce + 1.0*dice:smooth=1e+0", 4, ignore_index=7)
    assert isinstance(loss, WeightedSum) and loss.weights == [0.5, 1.0]
    assert [type(m) for m in loss.losses] == [CrossEntropyLoss, DiceLoss]
    assert all(m.ignore_index == 7 for m in loss.losses)
    assert build_loss("ce+dice", 4).weights == [1.0, 1.0]
    assert build_loss("2*focal", 4).weights == [2.0]


@pytest.mark.parametrize("spec, message", [
    ("cee", "unknown loss 'cee' in spec 'cee'; valid names: ce, dice, focal, lovasz, tversky"),
    ("ce+bce", "unknown loss 'bce'"),
    ("", "empty loss spec"),
    ("ce++dice", "empty term"),
    ("focal:gama=2", "loss 'focal' has no parameter 'gama=2' in spec 'focal:gama=2'; valid: gamma=<number >= 0>, "
                     "alpha=<number or list of C numbers>"),
    ("lovasz:gamma=1", "valid: per_image=<true|false>"),
    ("focal:gamma", "no parameter 'gamma'"),
    ("focal:gamma=two", "focal:gamma=two in loss spec 'focal:gamma=two': 'two' is not a number"),
    ("focal:gamma=-1", "gamma must be >= 0"),
    ("dice:squared=maybe", "expected true or false"),
    ("half*ce", "weight 'half'"),
    ("-1*ce", "must be a positive number"),
    ("ce:weight=2", "expected a list of C numbers"),
    ("ce:weight=[1,2]", "ce:weight has 2 values in loss spec 'ce:weight=[1,2]'; give one per class (4)"),
    ("focal:alpha=[1,2,3]", "give one per class (4)"),
    ("tversky:alpha=[1,2,3,4]", "expected a number >= 0 (false positives), not a list"),
])
def test_build_loss_errors_name_what_is_valid(spec, message):
    with pytest.raises(SegedgeError) as error:
        build_loss(spec, num_classes=4)
    assert message in str(error.value)


def test_labels_out_of_range_and_bad_shapes_are_refused():
    logits, target = random_batch()
    target[0, 0, 0] = 9
    with pytest.raises(SegedgeError, match="label 9 outside 0..3 .*ignore index 255"):
        CrossEntropyLoss()(logits, target)
    with pytest.raises(ValueError, match=r"target must be N×H×W = \(2, 5, 6\)"):
        DiceLoss()(logits, target[:, :4])
    with pytest.raises(ValueError, match="integer class labels"):
        DiceLoss()(logits, target.float())
    with pytest.raises(SegedgeError, match="weight has 3 values for 4 classes"):
        CrossEntropyLoss(weight=[1, 1, 1])(logits, torch.zeros_like(target))
