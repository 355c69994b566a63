import pytest
import torch

from engine import schedule
from engine.model import add_noise, guided, x0_from_velocity


def test_student_step_lists_match_dmd2():
    assert schedule.default_student_timesteps(4) == [1000, 750, 500, 250]
    assert schedule.default_student_timesteps(2) == [1000, 500]
    assert schedule.default_student_timesteps(1) == [1000]
    assert schedule.default_student_timesteps(3) == [1000, 757, 522]  # FastWan's list


def test_shift_formula_by_hand():
    # s' = k s / (1 + (k - 1) s): k = 3, s = 0.5 -> 1.5 / 2 = 0.75
    assert schedule.shift_sigma(0.5, 3.0).item() == pytest.approx(0.75)
    sig = schedule.student_sigmas([1000, 500], shift=3.0)
    assert sig.tolist() == pytest.approx([1.0, 0.75])
    assert schedule.student_sigmas([1000, 500], shift=3.0, warp=False).tolist() == [1.0, 0.5]


def test_teacher_sigmas_run_from_one_to_zero():
    sig = schedule.teacher_sigmas(50, shift=5.0)
    assert len(sig) == 51 and sig[0] == 1.0 and sig[-1] == 0.0
    assert torch.all(sig[1:] < sig[:-1])


@pytest.mark.parametrize("bad", [[0], [1001], []])
def test_bad_student_timesteps_named(bad):
    with pytest.raises(ValueError, match=str(bad).replace("[", r"\[").replace("]", r"\]")):
        schedule.student_sigmas(bad)


def test_x0_velocity_round_trip():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 2, 4, 4, generator=g)
    eps = torch.randn(2, 3, 2, 4, 4, generator=g)
    sigma = torch.tensor([0.3, 0.9])
    x_t = add_noise(x0, eps, sigma)
    assert torch.allclose(x_t[0], 0.7 * x0[0] + 0.3 * eps[0])
    v = eps - x0  # the network's target
    assert torch.allclose(x0_from_velocity(x_t, v, sigma), x0, atol=1e-6)


def test_cfg_formula_by_hand():
    v_u = torch.tensor([1.0, 2.0])
    v_c = torch.tensor([3.0, 1.0])
    # v_u + w (v_c - v_u), w = 4: [1 + 4*2, 2 + 4*(-1)] = [9, -2]
    assert guided(v_u, v_c, 4.0).tolist() == [9.0, -2.0]
    assert guided(v_u, v_c, 1.0).tolist() == v_c.tolist()
