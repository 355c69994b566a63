"""A soup of students: the weight average, its checks, and `rushes soup` writing it."""

import copy
import json
import shutil

import pytest
import torch

from engine import loading
from engine.distill.export import add_student, add_student_lora
from engine.distill.soup import average_weights, soup_students


def test_average_weights_is_the_weighted_mean_of_every_tensor():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[4.0]])}
    b = {"w": torch.tensor([3.0, -2.0]), "b": torch.tensor([[0.0]])}
    uniform = average_weights([a, b])
    torch.testing.assert_close(uniform["w"], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(uniform["b"], torch.tensor([[2.0]]))
    weighted = average_weights([a, b], [1, 3])  # (1 a + 3 b) / 4
    torch.testing.assert_close(weighted["w"], torch.tensor([2.5, -1.0]))
    torch.testing.assert_close(weighted["b"], torch.tensor([[1.0]]))
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16), "b": torch.tensor([[4.0]], dtype=torch.bfloat16)}
    assert average_weights([half, b])["w"].dtype == torch.float32


def test_average_weights_refuses_what_is_not_one_network_or_no_weights():
    a = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="at least 2 students, got 1"):
        average_weights([a])
    with pytest.raises(ValueError, match="other weights than student 0"):
        average_weights([a, {"v": torch.zeros(2)}])
    with pytest.raises(ValueError, match=r"student 1's w is \(3,\), student 0's \(2,\)"):
        average_weights([a, {"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match=r"3 soup weights for 2 students"):
        average_weights([a, a], [1, 1, 1])
    with pytest.raises(ValueError, match=r"must be >= 0 and not all 0, got \[1.0, -1.0\]"):
        average_weights([a, a], [1, -1])
    with pytest.raises(ValueError, match=r"not all 0, got \[0.0, 0.0\]"):
        average_weights([a, a], [0, 0])
    with pytest.raises(ValueError, match=r"not all 0, got \[nan, 1.0\]"):
        average_weights([a, a], [float("nan"), 1])


def _with_one_step(tiny_folder, tmp_path, name: str, shift: float, lora: bool = False):
    """A copy of the tiny pipeline whose 1-step student is its 4-step network + `shift` on every
    weight of one Linear layer (stored as a rank-1 LoRA on that network with `lora`)."""
    folder = tmp_path / name
    shutil.copytree(tiny_folder, folder)
    student = copy.deepcopy(loading.load(str(folder)).student(4)[0].transformer)
    layer = student.get_submodule("blocks.0.attn1.to_q")
    with torch.no_grad():
        layer.weight += shift  # a rank-1 change: shift * 1 1^T
    if lora:
        add_student_lora(folder, student, 1, [1000], base_steps=4, rank=1, noise_frame_share=0.5)
    else:
        add_student(folder, student, 1, [1000], noise_frame_share=0.5)
    return folder


def test_a_soup_of_two_students_is_their_average_as_a_network_or_a_lora(tiny_folder, tmp_path):
    one = _with_one_step(tiny_folder, tmp_path, "a", 0.25)
    two = _with_one_step(tiny_folder, tmp_path, "b", 0.75, lora=True)
    four = loading.load(str(one)).student(4)[0].transformer.state_dict()
    want = four["blocks.0.attn1.to_q.weight"] + 0.5  # (0.25 + 0.75) / 2

    report = soup_students([one, two], 1, tmp_path / "soup")
    assert report == {"out": str(tmp_path / "soup"), "steps": 1, "students": 2}
    soup = loading.load(str(tmp_path / "soup"))
    entry = json.loads((tmp_path / "soup" / "rushes.json").read_text())["students"]["1"]
    assert entry == {"folder": "students/1step", "timesteps": [1000], "noise_frame_share": 0.5}
    got = soup.student(1)[0].transformer.state_dict()
    torch.testing.assert_close(got["blocks.0.attn1.to_q.weight"], want, atol=1e-2, rtol=1e-2)  # stored in bf16
    torch.testing.assert_close(got["blocks.1.attn1.to_q.weight"], four["blocks.1.attn1.to_q.weight"],
                               atol=4e-3, rtol=1e-2)  # unchanged but for bf16 rounding
    record = json.loads((tmp_path / "soup" / "bake.json").read_text())["student_1step"]
    assert record == {"soup_of": [str(one), str(two)], "weights": [1.0, 1.0]}

    report = soup_students([one, two], 1, tmp_path / "soup-lora", weights=[3, 1], lora_rank=1)
    assert report["rank"] == 1 and report["linear_energy_kept"] == pytest.approx(1.0, abs=1e-4)
    entry = json.loads((tmp_path / "soup-lora" / "rushes.json").read_text())["students"]["1"]
    assert entry == {"folder": "students/4step", "lora": "students/1step-lora", "timesteps": [1000],
                     "noise_frame_share": 0.5}
    got = loading.load(str(tmp_path / "soup-lora")).student(1)[0].transformer.state_dict()
    torch.testing.assert_close(got["blocks.0.attn1.to_q.weight"], four["blocks.0.attn1.to_q.weight"] + 0.375,
                               atol=1e-2, rtol=1e-2)  # (3 * 0.25 + 0.75) / 4


def test_students_sampled_differently_make_no_soup_and_nothing_is_written(tiny_folder, tmp_path):
    one = _with_one_step(tiny_folder, tmp_path, "a", 0.25)
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)  # its 1-step student: iid noise, no share
    with pytest.raises(ValueError, match=r"other's 1-step student samples at timesteps \[1000\] with noise frame "
                                         r"share 0.0, .*a's at \[1000\] with 0.5"):
        soup_students([one, other], 1, tmp_path / "soup")
    with pytest.raises(ValueError, match="has no 3-step student"):
        soup_students([one, other], 3, tmp_path / "soup")
    with pytest.raises(ValueError, match="lora_rank must be >= 1, got 0"):
        soup_students([one, other], 1, tmp_path / "soup", lora_rank=0)
    assert not (tmp_path / "soup").exists()


def test_cli_soup_writes_the_soup_and_names_bad_weights(tiny_folder, tmp_path, capsys):
    from engine.cli import main

    one = _with_one_step(tiny_folder, tmp_path, "a", 0.25)
    two = _with_one_step(tiny_folder, tmp_path, "b", 0.75)
    out = tmp_path / "soup"
    assert main(["soup", str(one), str(two), "--steps", "1", "--lora-rank", "1", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip())["students"] == 2
    assert loading.load(str(out)).student(1)[1] == [1000]
    assert main(["soup", str(one), str(two), "--steps", "1", "--weights", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "1 soup weights for 2 students" in capsys.readouterr().err and not (tmp_path / "bad").exists()
