"""The students stage of `rushes bake toyworld`: the roles it ships, the soups, resuming, and
the shipped model's budget."""

import pytest
import torch


def _students_bake(tiny_folder, tmp_path, monkeypatch, settings: dict):
    """A copy of the tiny pipeline as assets/toyworld, and tiny distillation settings for its
    students stage (`settings` on top), with no 4-step soup unless a test sets one; returns the folder."""
    import shutil

    from engine import paths
    from engine.toyworld import bake

    folder = tmp_path / "toyworld"
    shutil.copytree(tiny_folder, folder)
    monkeypatch.setattr(paths, "TOYWORLD", folder)
    small = {"batch": 2, "frames": 3, "size": 32, "pool_capacity": 16, "fake_updates": 1, "lrm_warmup": 0}
    monkeypatch.setattr(bake, "STUDENT_SETTINGS", settings | small)
    monkeypatch.setattr(bake, "FOUR_STEP_SOUP", [])
    return folder


def test_students_stage_ships_a_network_an_alias_and_a_lora_and_resumes_without_training(
        tiny_folder, tmp_path, monkeypatch):
    import json

    from engine import loading
    from engine.toyworld import bake

    folder = _students_bake(tiny_folder, tmp_path, monkeypatch, {"method": "vsd+cd+lrm", "steps": 2})
    monkeypatch.setattr(bake, "FEWER_STEP_STUDENTS", {1: {"steps": 1}})
    monkeypatch.setattr(bake, "STUDENT_LORA_RANK", 2)
    lines = list(bake.bake("students"))
    assert sum("[distill] step" in line for line in lines) == 3  # 2 updates of the 4-step, 1 of the 1-step
    students = json.loads((folder / "rushes.json").read_text())["students"]
    assert students["2"] == {"folder": "students/4step", "timesteps": [1000, 500]}
    assert students["1"] == {"folder": "students/4step", "lora": "students/1step-lora", "timesteps": [1000]}
    assert sorted(p.name for p in (folder / "students").iterdir()) == ["1step-lora", "4step"]
    assert json.loads((folder / "bake.json").read_text())["student_1step"]["rank"] == 2
    model = loading.load(str(folder))
    one, four = model.student(1)[0].transformer, model.student(4)[0].transformer
    assert any(not torch.equal(a, b) for a, b in zip(one.parameters(), four.parameters()))
    again = list(bake.bake("students"))  # finished runs re-export, nothing trains
    assert not any("[distill] step" in line for line in again)
    # one role alone: the 1-step run goes on from the shipped 4-step network, which stays as it is
    four = (folder / "students" / "4step" / "diffusion_pytorch_model.safetensors").read_bytes()
    monkeypatch.setattr(bake, "FEWER_STEP_STUDENTS", {1: {"steps": 2}})
    only = list(bake.bake("students", students=(1,)))
    assert sum("[distill] step" in line for line in only) == 1
    assert (folder / "students" / "4step" / "diffusion_pytorch_model.safetensors").read_bytes() == four
    with pytest.raises(ValueError, match="unknown student role 3"):
        list(bake.bake("students", students=(3,)))
    with pytest.raises(ValueError, match="--stage teacher"):
        list(bake.bake("teacher", students=(1,)))


def test_a_role_given_several_recipes_ships_their_soup_and_resumes_without_training(
        tiny_folder, tmp_path, monkeypatch):
    import json

    from engine import loading, paths
    from engine.distill.soup import average_weights
    from engine.toyworld import bake

    folder = _students_bake(tiny_folder, tmp_path, monkeypatch, {"method": "vsd", "steps": 1})
    big = {"noise_frame_share": 0.5, "lr": 1e-2}  # updates that move every weight visibly
    recipes = [{"steps": 1} | big, {"steps": 2} | big, {"steps": 1, "seed": 1} | big]
    monkeypatch.setattr(bake, "FEWER_STEP_STUDENTS", {1: recipes})
    monkeypatch.setattr(bake, "SOUP_LORA_RANK", 16)  # the tiny network's full rank: exact up to bf16
    lines = list(bake.bake("students", students=(1,)))
    # 1 update, 1 more in the same run folder (the 2-update recipe goes on from the first), 1 update
    assert sum("[distill] step" in line for line in lines) == 3
    work = paths.home() / "bake" / "soup-1step"
    assert sorted(p.name for p in work.iterdir()) == ["0", "1", "2"]
    entry = json.loads((folder / "rushes.json").read_text())["students"]["1"]
    assert entry == {"folder": "students/4step", "lora": "students/1step-lora", "timesteps": [1000],
                     "noise_frame_share": 0.5}
    record = json.loads((folder / "bake.json").read_text())["student_1step"]
    assert record["soup_of"] == [bake.STUDENT_SETTINGS | r for r in recipes] and record["rank"] == 16
    parts = [loading.load(str(work / i)).student(1)[0].transformer.state_dict() for i in "012"]
    want = average_weights(parts)
    got = loading.load(str(folder)).student(1)[0].transformer.state_dict()
    name = "blocks.0.attn1.to_q.weight"
    for part in parts:  # each student lies well away from the soup, which the shipped LoRA holds
        assert (part[name] - want[name]).abs().max() > 5e-3
    torch.testing.assert_close(got[name], want[name], atol=2e-3, rtol=1e-2)
    again = list(bake.bake("students", students=(1,)))  # every recipe DONE: nothing trains, the soup is remade
    assert not any("[distill] step" in line for line in again)
    assert any('"soup": 1' in line for line in again)
    # a new 4-step network: what the recipes were made from is gone, so each is made again from it
    from engine.distill.export import add_student
    from tests.conftest import tiny_transformer

    add_student(folder, tiny_transformer(seed=9), 4, [1000, 750, 500, 250])
    remade = list(bake.bake("students", students=(1,)))
    assert sum("[distill] step" in line for line in remade) == 3


def test_the_four_step_role_ends_as_a_lora_soup_of_its_network_and_continuations_of_it(
        tiny_folder, tmp_path, monkeypatch):
    import json

    import diffusers

    from engine import loading, paths
    from engine.distill.soup import average_weights
    from engine.toyworld import bake

    folder = _students_bake(tiny_folder, tmp_path, monkeypatch, {"method": "vsd", "steps": 1})
    big = {"lr": 1e-2}  # updates that move every weight visibly
    recipes = [{"w_px": 1.0, "px_reward": "toyworld-colour-count"} | big, {"seed": 1} | big]
    monkeypatch.setattr(bake, "FEWER_STEP_STUDENTS", {2: {"steps": 1}})
    monkeypatch.setattr(bake, "FOUR_STEP_SOUP", recipes)
    for rank in ("STUDENT_LORA_RANK", "FOUR_STEP_PART_RANK", "FOUR_STEP_SOUP_RANK"):
        monkeypatch.setattr(bake, rank, 16)  # the tiny network's full rank: exact up to bf16
    lines = list(bake.bake("students", students=(4, 2)))
    # 1 update of the 4-step network, 1 of the 2-step from it, then 1 for each continuation of it
    assert sum("[distill] step" in line for line in lines) == 4
    students = json.loads((folder / "rushes.json").read_text())["students"]
    assert students["4"] == {"folder": "students/4step", "lora": "students/4step-lora",
                             "timesteps": [1000, 750, 500, 250]}
    assert students["2"]["folder"] == "students/4step" and students["2"]["lora"] == "students/2step-lora"
    record = json.loads((folder / "bake.json").read_text())["student_4step"]
    assert record["soup_of"][0]["method"] == "vsd"  # the 4-step network's own record, then the continuations'
    assert record["soup_of"][1:] == [bake.STUDENT_SETTINGS | r | {"lora_rank": 16} for r in recipes]
    work = paths.home() / "bake" / "soup-4step"
    network = diffusers.WanTransformer3DModel.from_pretrained(folder / "students" / "4step").state_dict()
    parts = [loading.load(str(work / i)).student(4)[0].transformer.state_dict() for i in "01"]
    want = average_weights([network] + parts)
    model = loading.load(str(folder))
    got = model.student(4)[0].transformer.state_dict()
    name = "blocks.0.attn1.to_q.weight"
    for part in [network] + parts:  # each ingredient lies well away from the soup, which the LoRA holds
        assert (part[name] - want[name]).abs().max() > 5e-3
    torch.testing.assert_close(got[name], want[name], atol=2e-3, rtol=1e-2)
    two = model.student(2)[0].transformer.state_dict()  # the 2-step LoRA still sits on the plain network
    assert (two[name] - got[name]).abs().max() > 5e-3
    again = list(bake.bake("students", students=(4, 2)))  # everything resumes: nothing trains, the soup is remade
    assert not any("[distill] step" in line for line in again)
    assert json.loads((folder / "rushes.json").read_text())["students"] == students
    # a fewer-step role remade alone over the soup starts from it, and is a LoRA on the same network
    monkeypatch.setattr(bake, "FEWER_STEP_STUDENTS", {2: {"steps": 1, "seed": 2}})
    list(bake.bake("students", students=(2,)))
    after = json.loads((folder / "rushes.json").read_text())["students"]
    assert after["4"] == students["4"] and after["2"]["lora"] == "students/2step-lora"
    torch.testing.assert_close(loading.load(str(folder)).student(4)[0].transformer.state_dict()[name], got[name])


def test_the_shipped_model_fits_its_size_budget_and_every_student_file_is_in_use():
    """assets/toyworld is at most 30 MB in all (issue 3), and rushes.json serves the 1-, 2- and
    4-step students and the causal one from folders that exist, with nothing under students/ left
    unused."""
    import json

    from engine import paths

    size = sum(f.stat().st_size for f in paths.TOYWORLD.rglob("*") if f.is_file())
    assert size <= 30e6, f"assets/toyworld is {size / 1e6:.2f} MB"
    info = json.loads((paths.TOYWORLD / "rushes.json").read_text())
    students = info["students"]
    assert sorted(students, key=int) == ["1", "2", "4"]
    assert info["stream"].get("lora")  # the causal student, a LoRA on the 4-step network
    used = {e[k] for e in [*students.values(), info["stream"]] for k in ("folder", "lora") if k in e}
    assert all((paths.TOYWORLD / u).is_dir() for u in used)
    assert {f"students/{p.name}" for p in (paths.TOYWORLD / "students").iterdir()} == used


def test_a_soup_recipe_marker_counts_only_when_whole_and_equal(tmp_path):
    """A DONE marker torn by a crash (or missing, or for other weights) makes the recipe run again."""
    import json

    from engine.toyworld.bake import _holds

    done, marker = tmp_path / "DONE", {"recipe": {"w_px": 4.0}, "from": "abc+def"}
    assert not _holds(done, marker)
    done.write_text(json.dumps(marker)[:10])
    assert not _holds(done, marker)
    done.write_text(json.dumps(marker | {"from": "abc+xyz"}))
    assert not _holds(done, marker)
    done.write_text(json.dumps(marker))
    assert _holds(done, marker)


def test_the_stream_stage_ships_a_causal_lora_on_the_student_and_resumes_without_training(
        tiny_folder, tmp_path, monkeypatch):
    import json

    from engine import loading
    from engine.toyworld import bake

    folder = _students_bake(tiny_folder, tmp_path, monkeypatch, {})
    monkeypatch.setattr(bake, "STREAM_SETTINGS", {"chunk": 1, "sink": 1, "recent": 1, "student_steps": 2, "batch": 2,
                                                  "pairs": 2, "pair_steps": 2, "fake_updates": 1, "ode_steps": 1,
                                                  "dmd_steps": 1})
    monkeypatch.setattr(bake, "STREAM_FROM", 2)
    monkeypatch.setattr(bake, "STREAM_LORA_RANK", 2)
    lines = list(bake.bake("stream"))
    assert sum("[distill-stream] ode" in line or "[distill-stream] dmd" in line for line in lines) == 2
    entry = json.loads((folder / "rushes.json").read_text())["stream"]
    assert entry["lora"] == "students/causal-lora" and entry["chunk"] == 1 and entry["folder"] == "students/2step"
    assert json.loads((folder / "bake.json").read_text())["student_causal"]["rank"] == 2
    network, _ = loading.load(str(folder)).stream
    assert network is not None
    again = list(bake.bake("stream"))  # the finished run re-exports, nothing trains
    assert not any("[distill-stream] dmd" in line for line in again)
