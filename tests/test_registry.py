"""Real-checkpoint loading on CPU: tiny random Wan-family folders (UMT5 text encoder, 3D Wan
VAE) written by the test, reached through the model registry."""

import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from conftest import tiny_transformer
from engine import registry
from engine.events import Failed, Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.textenc import minilm_path


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wan") / "Wan-tiny-Diffusers"
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2))
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.1] * 4, latents_std=[2.0] * 4)
    transformer = tiny_transformer()
    transformer.register_to_config(text_dim=32)
    transformer = type(transformer)(**{**transformer.config, "text_dim": 32})
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer,
                       scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                         flow_shift=3.0))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _write_registry(home, wan_folder):
    (home / "models.toml").write_text(f'''
[models.tiny-teacher]
source = "{wan_folder}"
role = "teacher"
teacher_steps = 3
guidance = 4.0

[models.tiny-student]
source = "{wan_folder}"
role = "student"
timesteps = [1000, 757, 522]
shift = 8.0
guidance = 1.0

[models.not-here]
source = "Nobody/Not-A-Real-Model-Diffusers"
role = "teacher"
''')


def test_presets_are_written_and_parse(rushes_home):
    entries = registry.load_registry()
    assert entries["fastwan2.1-t2v-1.3b"].timesteps == [1000, 757, 522]
    assert entries["fastwan2.1-t2v-1.3b"].shift == 8.0 and entries["wan2.1-t2v-1.3b"].teacher_steps == 50


def test_registry_teacher_and_student_generate(rushes_home, wan_folder):
    _write_registry(rushes_home, wan_folder)
    engine = Engine()
    size = {"frames": 5, "height": 32, "width": 32, "seed": 1}
    teacher = list(engine.generate(GenerateRequest(prompt="a cat", model="tiny-teacher", role="teacher", **size)))[-1]
    assert isinstance(teacher, Result), teacher
    assert teacher.value.frames.shape == (5, 32, 32, 3) and teacher.value.meta["nfe"] == 6
    student = list(engine.generate(GenerateRequest(prompt="a cat", model="tiny-student", **size)))[-1]
    assert isinstance(student, Result), student
    assert student.value.meta["timesteps"] == [1000, 757, 522] and student.value.meta["nfe"] == 3
    wrong = list(engine.generate(GenerateRequest(prompt="a cat", model="tiny-student", role="teacher", **size)))[-1]
    assert isinstance(wrong, Failed) and "distilled student" in wrong.message
    bad_frames = list(engine.generate(GenerateRequest(prompt="a cat", model="tiny-teacher", role="teacher",
                                                      frames=6, height=32, width=32)))[-1]
    assert isinstance(bad_frames, Failed) and "4k+1" in bad_frames.message


def test_missing_hub_model_is_a_clear_error(rushes_home, wan_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _write_registry(rushes_home, wan_folder)
    event = list(Engine().generate(GenerateRequest(prompt="x", model="not-here")))[-1]
    assert isinstance(event, Failed) and "Nobody/Not-A-Real-Model-Diffusers" in event.message


def test_bad_registry_entries_name_themselves(rushes_home):
    (rushes_home / "models.toml").write_text('[models.x]\nsource = "/a"\nrole = "critic"\n')
    with pytest.raises(ValueError, match="critic"):
        registry.load_registry()
    (rushes_home / "models.toml").write_text('[models.x]\nsource = "/a"\ncolour = 1\n')
    with pytest.raises(ValueError, match="colour"):
        registry.load_registry()


def test_a_student_preset_waiting_for_its_lora_is_refused_naming_the_field(rushes_home):
    registry.load_registry()  # writes the presets
    event = list(Engine().generate(GenerateRequest(prompt="a cat", model="wan2.1-t2v-1.3b-lora4")))[-1]
    assert isinstance(event, Failed)
    assert "lora is empty" in event.message and 'set lora = "/path/to/the_lora.safetensors"' in event.message
    assert 'models."wan2.1-t2v-1.3b-lora4"' in event.message and str(rushes_home / "models.toml") in event.message


def test_a_wan_checkpoint_keeps_its_own_scheduler_and_its_text_encoders_dtype(rushes_home, wan_folder):
    """Wan2.1 ships UniPC: the teacher samples with it unless asked otherwise; the text encoder
    loads in the model's dtype, not transformers' default."""
    import torch

    from engine import loading

    assert loading.read_info(wan_folder).solver == "unipc"
    engine = Engine()
    clip = list(engine.generate(GenerateRequest(prompt="a cat", model=str(wan_folder), role="teacher", steps=3,
                                                frames=5, height=32, width=32, seed=0)))[-1]
    assert isinstance(clip, Result) and clip.value.meta["solver"] == "unipc"
    euler = list(engine.generate(GenerateRequest(prompt="a cat", model=str(wan_folder), role="teacher", steps=3,
                                                 frames=5, height=32, width=32, seed=0, solver="euler")))[-1]
    assert euler.value.meta["solver"] == "euler"
    loaded = loading.load(str(wan_folder), dtype=torch.bfloat16)
    assert next(loaded.text.encoder.parameters()).dtype == torch.bfloat16
