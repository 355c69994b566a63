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


def test_position_channels_run_from_minus_one_to_one_over_the_clip():
    from engine.model import with_positions

    x = torch.zeros(2, 4, 5, 3, 4)
    out = with_positions(x, 3)
    assert out.shape == (2, 7, 5, 3, 4)
    t, row, col = out[0, 4], out[0, 5], out[0, 6]
    assert t[0].eq(-1).all() and t[-1].eq(1).all() and t[2].eq(0).all()
    assert row[:, 0].eq(-1).all() and row[:, -1].eq(1).all()
    assert col[..., 0].eq(-1).all() and col[..., -1].eq(1).all()
    assert torch.equal(with_positions(x, 0), x)
    with pytest.raises(ValueError, match="rushes_position_channels must be 0 or 3, got 2"):
        with_positions(x, 2)


def test_a_widened_network_predicts_as_before_and_keeps_its_key_on_disk(tmp_path):
    from diffusers import WanTransformer3DModel

    from engine.model import FlowModel, position_channels, widen_inputs
    from tests.conftest import tiny_transformer

    narrow = tiny_transformer().eval()
    wide = widen_inputs(narrow, 3).eval()
    assert wide.config.in_channels == 7 and position_channels(wide) == 3 and position_channels(narrow) == 0
    x, s, text = torch.randn(2, 4, 3, 4, 4), torch.tensor([0.9, 0.3]), torch.randn(2, 6, 384)
    with torch.no_grad():
        assert torch.allclose(FlowModel(narrow).velocity(x, s, text), FlowModel(wide).velocity(x, s, text), atol=1e-6)
        wide.patch_embedding.weight[:, 4:] = 0.5  # once trained, the positions change the prediction
        assert not torch.allclose(FlowModel(narrow).velocity(x, s, text), FlowModel(wide).velocity(x, s, text))
    wide.save_pretrained(tmp_path / "t", safe_serialization=True)
    again = WanTransformer3DModel.from_pretrained(tmp_path / "t")
    assert position_channels(again) == 3 and again.config.in_channels == 7
    with pytest.raises(ValueError, match="already reads position channels"):
        widen_inputs(again, 3)


def test_frame_neighbours_are_the_frames_before_and_after_with_zeros_past_the_ends():
    from engine.model import frame_neighbours

    x = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(2, 3, 5, 2, 2)  # channel value = frame index
    out = frame_neighbours(x, 2)
    assert out.shape == (2, 12, 5, 2, 2)
    per_offset = out[0, ::3, :, 0, 0]  # one channel of each offset -2, -1, +1, +2: [4, T]
    assert per_offset.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [1, 2, 3, 4, 0], [2, 3, 4, 0, 0]]
    with pytest.raises(ValueError, match="rushes_frame_context must be >= 0, got -1"):
        frame_neighbours(x, -1)


def test_a_network_widened_to_frame_context_predicts_as_before_then_reads_time_order(tmp_path):
    """Zero weights on the context channels change nothing; trained ones let the prediction
    depend on which way the clip runs, which a per-frame network cannot see inside a token."""
    from diffusers import WanTransformer3DModel

    from engine.model import FlowModel, frame_context, network_inputs, position_channels, widen_inputs
    from tests.conftest import tiny_transformer

    narrow = tiny_transformer().eval()
    wide = widen_inputs(widen_inputs(narrow, 3), context=1).eval()
    assert wide.config.in_channels == 4 + 3 + 2 * 4 and frame_context(wide) == 1 and position_channels(wide) == 3
    x, s, text = torch.randn(2, 4, 3, 4, 4), torch.tensor([0.9, 0.3]), torch.randn(2, 6, 384)
    assert network_inputs(x, wide).shape == (2, 15, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(FlowModel(narrow).velocity(x, s, text), FlowModel(wide).velocity(x, s, text), atol=1e-6)
        wide.patch_embedding.weight[:, 7:] = torch.randn_like(wide.patch_embedding.weight[:, 7:])
        v = FlowModel(wide).velocity(x, s, text)
        assert not torch.allclose(v, FlowModel(narrow).velocity(x, s, text))
    wide.save_pretrained(tmp_path / "t", safe_serialization=True)
    again = WanTransformer3DModel.from_pretrained(tmp_path / "t")
    assert frame_context(again) == 1 and position_channels(again) == 3
    with torch.no_grad():
        assert torch.allclose(FlowModel(again.eval()).velocity(x, s, text), v, atol=1e-5)
    with pytest.raises(ValueError, match="already reads frame context"):
        widen_inputs(again, context=1)
    with pytest.raises(ValueError, match="widen positions first"):
        widen_inputs(widen_inputs(narrow, context=1), 3)
