"""A student stored as a LoRA on another student's network: extraction, export, loading."""

import copy
import json
import shutil

import pytest
import torch
from safetensors import safe_open

from conftest import tiny_transformer
from engine import loading
from engine.distill.export import add_student, add_student_lora
from engine.distill.extract import extract


def _perturbed(base, rank: int, scale: float = 0.1, seed: int = 0):
    """`base` with a rank-`rank` change added to every Linear weight (and nothing else)."""
    gen = torch.Generator().manual_seed(seed)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for module in tuned.modules():
            if isinstance(module, torch.nn.Linear):
                out_f, in_f = module.weight.shape
                u, v = torch.randn(out_f, rank, generator=gen), torch.randn(rank, in_f, generator=gen)
                module.weight += scale * u @ v / (out_f * in_f) ** 0.25
    return tuned


def test_extraction_reproduces_a_low_rank_change_exactly():
    base = tiny_transformer(seed=0)
    tuned = _perturbed(base, rank=2)
    state, report = extract(base, tuned, rank=2)
    tuned_params = dict(tuned.named_parameters())
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.Linear):
            b = state[f"transformer.{name}.lora_B.weight"]
            a = state[f"transformer.{name}.lora_A.weight"]
            assert a.shape == (2, module.in_features) and b.shape == (module.out_features, 2)
            torch.testing.assert_close(module.weight + b @ a, tuned_params[f"{name}.weight"], atol=1e-5, rtol=1e-5)
    assert report["linear_energy_kept"] == pytest.approx(1.0, abs=1e-6)
    assert report["change_left_out"] == pytest.approx(0.0, abs=1e-3)


def test_extraction_keeps_the_top_singular_directions_and_reports_what_it_drops():
    """ΔW = 4·u1v1ᵀ + 3·u2v2ᵀ (orthonormal u, v): rank 1 keeps 16/25 of the energy, B·A = 4·u1v1ᵀ."""
    base = tiny_transformer(seed=0)
    tuned = copy.deepcopy(base)
    target = "blocks.0.attn1.to_q"
    layer = tuned.get_submodule(target)
    q_out, _ = torch.linalg.qr(torch.randn(layer.out_features, 2, generator=torch.Generator().manual_seed(1)))
    q_in, _ = torch.linalg.qr(torch.randn(layer.in_features, 2, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        layer.weight += 4 * q_out[:, :1] @ q_in[:, :1].T + 3 * q_out[:, 1:] @ q_in[:, 1:].T
        tuned.scale_shift_table += 1.0  # not a Linear weight: left out of the LoRA
    state, report = extract(base, tuned, rank=1)
    ba = state[f"transformer.{target}.lora_B.weight"] @ state[f"transformer.{target}.lora_A.weight"]
    torch.testing.assert_close(ba, 4 * q_out[:, :1] @ q_in[:, :1].T, atol=1e-5, rtol=1e-5)
    assert report["linear_energy_kept"] == pytest.approx(16 / 25, abs=1e-5)
    left_out = (9 + tuned.scale_shift_table.numel()) ** 0.5 / (25 + tuned.scale_shift_table.numel()) ** 0.5
    assert report["change_left_out"] == pytest.approx(left_out, abs=1e-5)
    with pytest.raises(ValueError, match="rank must be >= 1, got 0"):
        extract(base, tuned, rank=0)


def test_a_lora_student_loads_as_its_fused_network_and_dies_with_its_base(tiny_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    four = loading.load(str(folder)).student(4)[0].transformer
    tuned = _perturbed(four, rank=2, seed=3)
    report = add_student_lora(folder, tuned, 1, [1000], base_steps=4, rank=2, record={"method": "test"})
    assert report["linear_energy_kept"] == pytest.approx(1.0, abs=1e-6)
    entry = json.loads((folder / "rushes.json").read_text())["students"]["1"]
    assert entry == {"folder": "students/4step", "lora": "students/1step-lora", "timesteps": [1000]}
    assert not (folder / "students" / "1step").exists()  # the old 1-step network is gone
    lora_file = folder / "students" / "1step-lora" / "pytorch_lora_weights.safetensors"
    with safe_open(str(lora_file), framework="pt") as f:
        assert json.loads(f.metadata()["rushes"])["base_steps"] == 4
    model = loading.load(str(folder))
    one, fours = model.student(1), model.student(4)
    assert one[1] == [1000]
    expected = tuned.state_dict()
    for name, value in one[0].transformer.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=2e-3, rtol=1e-2)  # bf16 factors
    for name, value in fours[0].transformer.state_dict().items():  # the base network is untouched
        assert torch.equal(value, four.state_dict()[name]), name
    with pytest.raises(ValueError, match="no 3-step student network"):
        add_student_lora(folder, tuned, 2, [1000, 500], base_steps=3, rank=2)
    # a LoRA on a student that is itself a LoRA is taken against the network beneath both
    again = _perturbed(tuned, rank=2, seed=4)
    report = add_student_lora(folder, again, 4, [1000, 750, 500, 250], base_steps=1, rank=4)
    assert report["linear_energy_kept"] == pytest.approx(1.0, abs=1e-6)  # rank 2 + rank 2 against the network
    students = json.loads((folder / "rushes.json").read_text())["students"]
    assert students["4"] == {"folder": "students/4step", "lora": "students/4step-lora",
                             "timesteps": [1000, 750, 500, 250]}
    assert students["1"]["lora"] == "students/1step-lora"  # the other LoRA on that network stays
    expected = again.state_dict()
    for name, value in loading.load(str(folder)).student(4)[0].transformer.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=2e-3, rtol=1e-2)

    add_student(folder, tiny_transformer(seed=9), 4, [1000, 750, 500, 250])  # a new base network
    students = json.loads((folder / "rushes.json").read_text())["students"]
    assert "1" not in students and not (folder / "students" / "1step-lora").exists()  # stale LoRA dropped
    assert sorted(loading.load(str(folder)).students) == [2, 4]


def test_cli_distils_a_one_step_student_as_a_lora(tiny_folder, tmp_path, capsys):
    from engine.cli import main

    config = tmp_path / "c.json"
    config.write_text('{"batch": 2, "frames": 3, "size": 32, "pool_capacity": 16, "fake_updates": 1}')
    out = tmp_path / "out"
    assert main(["distill", "--config", str(config), "--model", str(tiny_folder), "--steps", "2",
                 "--student-steps", "1", "--init-student", "4", "--lora-rank", "2", "--method", "vsd+cd",
                 "--noise-frame-share", "0.9", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["rank"] == 2 and 0 < result["linear_energy_kept"] <= 1
    entry = json.loads((out / "rushes.json").read_text())["students"]["1"]
    assert entry["lora"] == "students/1step-lora" and entry["noise_frame_share"] == 0.9
    assert main(["generate", "--model", str(out), "--prompt", "a ball", "--steps", "1",
                 "--out", str(tmp_path / "x.mp4"), "--json"]) == 0
    assert '"nfe": 1' in capsys.readouterr().out
    assert main(["distill", "--config", str(config), "--model", str(tiny_folder), "--steps", "2",
                 "--lora-rank", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "needs init_student" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["distill", "--config", str(config), "--model", str(tiny_folder), "--steps", "2",
                 "--noise-frame-share", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert "noise_frame_share must be a number in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _facts(folder):
    """A pipeline folder and its facts, as starting_weights takes them."""
    return folder, loading.model_facts(str(folder))[0]


def test_a_run_from_a_student_is_keyed_by_that_students_weights(tiny_folder, tmp_path):
    """A re-distilled 4-step student must not resume (and re-export) a 1-step run begun from the old one."""
    from engine.distill.config import DistillConfig
    from engine.distill.run import starting_weights, weights_fingerprint

    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    from_four = DistillConfig(student_steps=1, init_student=4)
    before = starting_weights(*_facts(folder), from_four)
    assert starting_weights(*_facts(folder), DistillConfig()) == weights_fingerprint(folder / "transformer")
    add_student(folder, tiny_transformer(seed=7), 4, [1000, 750, 500, 250])
    after = starting_weights(*_facts(folder), from_four)
    assert before != after and before.split("+")[0] == after.split("+")[0]  # same teacher
    with pytest.raises(ValueError, match="no 3-step student to start from"):
        starting_weights(*_facts(folder), DistillConfig(student_steps=1, init_student=3))
