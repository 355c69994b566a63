"""Each loss pinned on tiny tensors against its equation, normalisers and stop-gradients included."""

import pytest
import torch

from engine.distill.cd import boundary, cd_loss, consistency_fn
from engine.distill.flow_matching import flow_matching_loss, sample_levels
from engine.distill.vsd import vsd_loss
from engine.reward.lrm import LatentRewardModel, lrm_fit_loss, reward_loss


def _v(*values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, 1, -1)


def test_vsd_matches_hand_computation_and_gradient():
    x = _v(1.0, 2.0).requires_grad_(True)
    real, fake = _v(0.0, 0.0), _v(1.0, 0.0)
    loss, logs = vsd_loss(x, real, fake)
    # normaliser = mean|x - real| = 1.5; grad = (fake - real) / 1.5 = [2/3, 0]
    # L = 0.5 * mean(grad^2) = 0.5 * (4/9) / 2 = 1/9
    assert loss.item() == pytest.approx(1 / 9, rel=1e-6)
    loss.backward()
    assert x.grad.flatten().tolist() == pytest.approx([1 / 3, 0.0], rel=1e-6)  # grad / N


def test_vsd_normaliser_is_per_sample():
    x = torch.cat([_v(1.0, 1.0), _v(10.0, 10.0)]).requires_grad_(True)
    real = torch.zeros_like(x)
    fake = torch.ones_like(x)
    vsd_loss(x, real, fake)[0].backward()
    # per-sample normalisers 1 and 10: grads 1 and 0.1 (/ N = 4)
    assert x.grad[0].flatten().tolist() == pytest.approx([0.25, 0.25])
    assert x.grad[1].flatten().tolist() == pytest.approx([0.025, 0.025], rel=1e-5)


def test_flow_matching_target_is_eps_minus_x0():
    x0, eps = _v(1.0, -1.0), _v(0.5, 0.5)
    loss, _ = flow_matching_loss(_v(-0.5, 1.5), x0, eps)  # exactly eps - x0
    assert loss.item() == 0.0
    loss, _ = flow_matching_loss(_v(0.5, 1.5), x0, eps)
    assert loss.item() == pytest.approx(0.5)  # (1^2 + 0) / 2
    levels = sample_levels(1000, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert 1e-3 <= levels.min() and levels.max() <= 1 and levels.mean() > 0.5  # shift pushes up


def test_lcm_boundary_condition():
    c_skip, c_out = boundary(torch.tensor([0.0, 0.5]))
    assert c_skip[0] == 1.0 and c_out[0] == 0.0
    assert c_skip[1] == pytest.approx(0.25 / (5000**2 + 0.25))
    assert c_out[1] == pytest.approx(1.0, abs=1e-6)
    x, x0 = _v(3.0, 4.0), _v(1.0, 2.0)
    assert torch.equal(consistency_fn(x, x0, torch.tensor([0.0])), x)  # f(x, 0) = x


def test_cd_distances_by_hand_and_target_detached():
    a = _v(1.0, 1.0).requires_grad_(True)
    b = _v(0.0, 0.0).requires_grad_(True)
    huber, _ = cd_loss(a, b, "huber", huber_c=0.001)
    assert huber.item() == pytest.approx((1 + 0.001**2) ** 0.5 - 0.001, rel=1e-6)
    mse, _ = cd_loss(a, b, "mse")
    assert mse.item() == 1.0
    (huber + mse).backward()
    assert b.grad is None and a.grad is not None
    with pytest.raises(ValueError, match="l1"):
        cd_loss(a, b, "l1")


def test_lrm_size_gradient_path_and_image_residual():
    lrm = LatentRewardModel(16, 128, text_dim=384)
    params = sum(p.numel() for p in lrm.parameters())
    assert 0.2e6 <= params <= 0.8e6
    z = torch.randn(2, 16, 5, 8, 8, requires_grad=True)
    text = torch.randn(2, 8, 384)
    out = lrm(z, text)
    assert out.shape == (2,)
    loss, logs = reward_loss(out)
    assert loss.item() == pytest.approx(-out.mean().item()) and logs["lrm_reward"] == pytest.approx(out.mean().item())
    loss.backward()
    assert z.grad.abs().sum() > 0  # L_FT reaches the latents through the LRM
    assert not torch.allclose(lrm(z * 0, text), lrm(z, text))  # the image still matters with text
    fit, _ = lrm_fit_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]))
    assert fit.item() == 2.0


def test_lrm_sees_frame_order_and_spread_and_its_members_fit_on_their_own():
    torch.manual_seed(0)
    lrm = LatentRewardModel(16, 64, text_dim=None)
    z = torch.randn(1, 16, 6, 8, 8)
    # the frame differences and the spread over time make the order of frames matter
    assert not torch.allclose(lrm(z), lrm(z[:, :, torch.randperm(6)]))
    flat = LatentRewardModel(16, 64, temporal=False)
    assert torch.allclose(flat(z), flat(z[:, :, torch.randperm(6)]), atol=1e-5)  # per-frame pooling only
    ensemble = LatentRewardModel(16, 64, members=3)
    each = ensemble(z, each=True)
    assert each.shape == (3, 1) and torch.allclose(ensemble(z), each.mean(0))
    # the fit is the mean of the members' own MSEs, not the MSE of their mean
    fit, _ = lrm_fit_loss(torch.tensor([[1.0, 1.0], [3.0, 3.0]]), torch.tensor([2.0, 2.0]))
    assert fit.item() == 1.0
    with pytest.raises(ValueError, match="members"):
        LatentRewardModel(16, 64, members=0)


def test_regression_loss_is_mse_to_the_detached_teacher_sample():
    from engine.distill.regression import regression_loss

    x = _v(1.0, 3.0).requires_grad_(True)
    target = _v(0.0, 1.0).requires_grad_(True)
    loss, logs = regression_loss(x, target)
    # L_reg = mean((x - y)^2) = (1 + 4) / 2 = 2.5; dL/dx = 2 (x - y) / N = [1, 2]
    assert loss.item() == pytest.approx(2.5) and logs["reg_loss"] == pytest.approx(2.5)
    loss.backward()
    assert x.grad.flatten().tolist() == pytest.approx([1.0, 2.0])
    assert target.grad is None  # the teacher's sample is a fixed target
