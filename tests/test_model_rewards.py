"""Model-based rewards (CLIP score, LAION aesthetic) on tiny random CLIP folders written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import TRAIN_PROMPTS
from engine.reward import models
from engine.reward.spec import RewardSpec, scorer
from engine.toyworld.render import render, sample_clip


def _vocab() -> dict[str, int]:
    """A byte-level CLIP BPE vocabulary with no merges: every character is a token."""
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def tiny_clip(folder, projection_dim=16, seed=0):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    table = _vocab()
    vocab = len(table)
    CLIPTokenizer(vocab=table, merges=[]).save_pretrained(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=projection_dim)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def _head(folder, dims=(16, 32, 8, 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        state[f"layers.{2 * i}.weight"] = torch.randn(b, a, generator=g) * 0.3
        state[f"layers.{2 * i}.bias"] = torch.randn(b, generator=g) * 0.1
    save_file(state, folder / models.HEAD_FILE)
    return state


def _clips(n=3):
    out = []
    for i in range(n):
        spec, caption = sample_clip("public-eval", i)
        out.append((render(spec, 9, 48), caption))
    return [c for c, _ in out], [p for _, p in out]


def test_clip_score_is_the_mean_frame_text_cosine(tmp_path):
    folder = tiny_clip(tmp_path / "clip")
    clips, prompts = _clips()
    values = scorer(RewardSpec("clip-score", model=str(folder)))(clips, prompts)
    assert len(values) == 3 and all(-1 <= v <= 1 for v in values)
    # recompute one by hand through transformers' own forward pass
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval()
    tok = CLIPTokenizer.from_pretrained(folder)
    clip = models._Clip(folder)
    with torch.no_grad():
        out = model(input_ids=tok([prompts[0]], return_tensors="pt", truncation=True, max_length=77).input_ids, pixel_values=clip._pixels(clips[0]))
    expected = (torch.nn.functional.normalize(out.image_embeds, dim=-1)
                @ torch.nn.functional.normalize(out.text_embeds, dim=-1).T).mean()
    assert values[0] == pytest.approx(float(expected), abs=1e-5)
    assert values != scorer(RewardSpec("clip-score", model=str(folder)))(clips, [prompts[1]] * 3)  # prompt matters


def test_aesthetic_applies_the_linear_head_to_normalised_embeddings(tmp_path):
    folder = tiny_clip(tmp_path / "aes")
    state = _head(folder)
    clips, prompts = _clips(2)
    values = scorer(RewardSpec("aesthetic", model=str(folder)))(clips, prompts)
    emb = models._Clip(folder).image_embeds(clips[:1])[0]
    x = emb
    for i in range(3):
        x = x @ state[f"layers.{2 * i}.weight"].T + state[f"layers.{2 * i}.bias"]
    assert values[0] == pytest.approx(float(x.mean()) / 10, abs=1e-5)


def test_missing_or_unsafe_model_folders_are_named(tmp_path, rushes_home):
    with pytest.raises(ValueError, match="reward-models/clip-score"):
        scorer(RewardSpec("clip-score"))
    folder = tiny_clip(tmp_path / "clip")
    with pytest.raises(ValueError, match="aesthetic_head.safetensors"):
        scorer(RewardSpec("aesthetic", model=str(folder)))
    _head(folder, dims=(24, 8, 1))
    with pytest.raises(ValueError, match="24-d"):
        scorer(RewardSpec("aesthetic", model=str(folder)))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    torch.save({"x": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no .safetensors"):
        scorer(RewardSpec("clip-score", model=str(pickled)))


def test_studio_offers_model_rewards_only_when_present(rushes_home):
    from studio.tune import reward_choices

    assert "clip-score" not in reward_choices()
    tiny_clip(rushes_home / "reward-models" / "clip-score")
    assert "clip-score" in reward_choices() and "aesthetic" not in reward_choices()
    assert scorer(RewardSpec("clip-score"))(*_clips(1))[0] == pytest.approx(
        scorer(RewardSpec("clip-score", model=str(rushes_home / "reward-models" / "clip-score")))(*_clips(1))[0])


def test_released_head_converts_without_running_pickled_code(tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {"layers.0.weight": torch.randn(4, 16, generator=g), "layers.0.bias": torch.zeros(4),
             "layers.2.weight": torch.randn(1, 4, generator=g), "layers.2.bias": torch.zeros(1)}
    torch.save(state, tmp_path / "head.pth")
    out = models.convert_aesthetic_head(tmp_path / "head.pth", tmp_path / models.HEAD_FILE)
    from safetensors.torch import load_file

    assert torch.equal(load_file(out)["layers.2.weight"], state["layers.2.weight"])

    class Evil:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').write('x')",))

    torch.save({"layers.0.weight": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(Exception):
        models.convert_aesthetic_head(tmp_path / "evil.pth", tmp_path / "evil.safetensors")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.safetensors").exists()


def test_tune_toward_clip_score_runs(tiny_folder, tmp_path):
    from engine import loading
    from engine.events import Result
    from engine.tune.config import TuneConfig
    from engine.tune.trainer import train

    folder = tiny_clip(tmp_path / "clip")
    cfg = TuneConfig(model=str(tiny_folder), steps=2, batch=2, lrm_warmup=1, checkpoint_every=2,
                     reward="clip-score", reward_model=str(folder), prompts=["a red ball", "a blue box"])
    events = list(train(cfg, loading.load(str(tiny_folder)), tmp_path / "w", TRAIN_PROMPTS))
    assert isinstance(events[-1], Result)
    assert np.isfinite(events[-2].metrics["reward"])
