"""Shared fixtures: a tiny random pipeline folder written in code, and an isolated RUSHES_HOME."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from engine.folder import ModelInfo, write_pipeline
from engine.toyworld import world
from engine.toyworld.data import ToyworldData

torch.set_num_threads(2)


def tiny_transformer(seed: int = 0, channels: int = 4) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=channels,
        out_channels=channels, text_dim=384, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32)


def tiny_vae(seed: int = 0, channels: int = 4) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=channels,
                         norm_num_groups=4, layers_per_block=1, mid_block_add_attention=False)


@pytest.fixture(autouse=True)
def rushes_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RUSHES_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A pipeline folder: tiny teacher, 1/2/4-step students (random weights), per-frame VAE."""
    folder = tmp_path_factory.mktemp("models") / "tiny"
    info = ModelInfo(name="tiny", shift=3.0, guidance=4.0, teacher_steps=6, frames=5, height=32,
                     width=32, max_frames=33, max_side=128, fps=8,
                     world="toyworld", vocabulary=world.vocabulary())  # toyworld-shaped, and says so
    students = {n: (tiny_transformer(seed=n), [round(1000 * (n - i) / n) for i in range(n)])
                for n in (1, 2, 4)}
    return write_pipeline(folder, tiny_transformer(), tiny_vae(), FlowMatchEulerDiscreteScheduler(shift=3.0),
                          info, students)


# toyworld's renderer as the data source the trainers are handed (engine/data.py): tiny test
# models are toyworld-shaped, and a trainer never picks its data itself
TOYWORLD = ToyworldData()
TRAIN_PROMPTS = TOYWORLD.prompts("train", 64)
