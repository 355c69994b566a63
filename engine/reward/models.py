"""Model-based rewards from weights the user already has: CLIP score and the LAION aesthetic predictor.

Nothing is downloaded. Each reward reads a local folder:

- `clip-score`: a transformers `CLIPModel` folder (config.json, model.safetensors, tokenizer files,
  optionally preprocessor_config.json). Reward = mean over up to `FRAMES` evenly spaced frames of the
  cosine similarity between the frame's and the prompt's CLIP embeddings (CLIPScore of Hessel et al.
  2021 without its 2.5 weight and clipping), so roughly 0.15-0.35 for real models.
- `aesthetic`: the same kind of CLIP folder (ViT-L/14 for the released predictor) plus
  `aesthetic_head.safetensors`, the LAION "improved aesthetic predictor" MLP applied to the
  L2-normalised image embedding. Reward = predicted score / 10 (the score is on a 1-10 scale).
  The released head is a `.pth`; `convert_aesthetic_head` turns it into safetensors with
  `torch.load(weights_only=True)`, which reads tensors without running pickled code.

Weights load with `use_safetensors=True`: a folder holding only pickles is refused. Rewards run
under no_grad (the latent reward model learns them), in float32, on the caller's device.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine import paths

MODEL_REWARDS = ("clip-score", "aesthetic")
FRAMES = 4  # frames per clip the reward looks at
HEAD_FILE = "aesthetic_head.safetensors"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def default_folder(name: str) -> Path:
    """Where the studio looks for a model reward's weights: `$RUSHES_HOME/reward-models/<name>`."""
    return paths.home() / "reward-models" / name


def available() -> list[str]:
    """Model rewards whose default folder holds weights (the studio only offers these)."""
    found = []
    for name in MODEL_REWARDS:
        folder = default_folder(name)
        if (folder / "config.json").is_file() and (name != "aesthetic" or (folder / HEAD_FILE).is_file()):
            found.append(name)
    return found


def _check_folder(name: str, folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ValueError(f"reward {name!r} needs a local CLIP model folder (transformers format: config.json, "
                         f"model.safetensors, tokenizer files); none at {folder}. Put one there or pass --reward-model")
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"reward {name!r}: {folder} has no .safetensors weights (pickled weights are not loaded)")
    if name == "aesthetic" and not (folder / HEAD_FILE).is_file():
        raise ValueError(f"reward 'aesthetic' needs {HEAD_FILE} (the LAION aesthetic MLP) in {folder}; convert the "
                         f"released .pth with engine.reward.models.convert_aesthetic_head")


class _Clip:
    """A CLIP model with its own frame preprocessing (resize, centre crop, normalise)."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from transformers import CLIPModel, CLIPTokenizer

        self.model = CLIPModel.from_pretrained(folder, use_safetensors=True, local_files_only=True).to(device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        self.device = device
        self.size = self.model.config.vision_config.image_size
        mean, std = CLIP_MEAN, CLIP_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            conf = json.loads(pre.read_text())
            mean, std = conf.get("image_mean", mean), conf.get("image_std", std)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> normalised [F, 3, S, S] for up to FRAMES evenly spaced frames."""
        pick = np.linspace(0, len(frames) - 1, min(FRAMES, len(frames))).round().astype(int)
        x = torch.from_numpy(np.ascontiguousarray(frames[pick])).permute(0, 3, 1, 2).float() / 255
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = torch.nn.functional.interpolate(x, size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))),
                                            mode="bicubic", align_corners=False).clamp(0, 1)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top:top + self.size, left:left + self.size]
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def image_embeds(self, clips: list[np.ndarray]) -> list[torch.Tensor]:
        """Per clip: L2-normalised image embeddings [F, D]."""
        out = []
        for frames in clips:
            emb = self.model.get_image_features(pixel_values=self._pixels(frames))
            emb = getattr(emb, "pooler_output", emb)  # newer transformers return an output object
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1))
        return out

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt",
                                max_length=self.model.config.text_config.max_position_embeddings).to(self.device)
        emb = self.model.get_text_features(**tokens)
        emb = getattr(emb, "pooler_output", emb)
        return torch.nn.functional.normalize(emb.float(), dim=-1)


class ClipScore:
    def __init__(self, folder: str | Path, device: str = "cpu"):
        folder = Path(folder).expanduser()
        _check_folder("clip-score", folder)
        self.clip = _Clip(folder, device)

    def __call__(self, clips: list[np.ndarray], prompts: list[str]) -> list[float]:
        text = self.clip.text_embeds(list(prompts))
        return [float((img @ t).mean()) for img, t in zip(self.clip.image_embeds(clips), text)]


def _head_layers(state: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The MLP's linear layers in order (`layers.<i>.weight` / `.bias`, the released key names)."""
    index = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.endswith(".weight")})
    if not index:
        raise ValueError(f"{HEAD_FILE} holds no `layers.<i>.weight` tensors; keys: {sorted(state)[:6]}")
    layers = [(state[f"layers.{i}.weight"].float(), state[f"layers.{i}.bias"].float()) for i in index]
    for (w0, _), (w1, _) in zip(layers, layers[1:]):
        if w0.shape[0] != w1.shape[1]:
            raise ValueError(f"{HEAD_FILE}: layer shapes {tuple(w0.shape)} and {tuple(w1.shape)} do not chain")
    if layers[-1][0].shape[0] != 1:
        raise ValueError(f"{HEAD_FILE}: the last layer must output one score, got {layers[-1][0].shape[0]}")
    return layers


class Aesthetic:
    def __init__(self, folder: str | Path, device: str = "cpu"):
        from safetensors.torch import load_file

        folder = Path(folder).expanduser()
        _check_folder("aesthetic", folder)
        self.clip = _Clip(folder, device)
        self.layers = [(w.to(device), b.to(device)) for w, b in _head_layers(load_file(folder / HEAD_FILE))]
        dim = self.clip.model.config.projection_dim
        if self.layers[0][0].shape[1] != dim:
            raise ValueError(f"{HEAD_FILE} expects {self.layers[0][0].shape[1]}-d embeddings but the CLIP model "
                             f"in {folder} gives {dim}-d (the released head needs ViT-L/14)")

    @torch.no_grad()
    def __call__(self, clips: list[np.ndarray], prompts: list[str]) -> list[float]:
        scores = []
        for x in self.clip.image_embeds(clips):
            for w, b in self.layers:  # the released MLP has no activations between its linears
                x = x @ w.T + b
            scores.append(float(x.mean()) / 10)
        return scores


def load(name: str, folder: str | Path | None = None, device: str = "cpu"):
    """The batch scorer for a model reward; ValueError naming the missing folder or file."""
    if name not in MODEL_REWARDS:
        raise ValueError(f"unknown model reward {name!r}; available: {', '.join(MODEL_REWARDS)}")
    folder = Path(folder).expanduser() if folder else default_folder(name)
    return (ClipScore if name == "clip-score" else Aesthetic)(folder, device)


def convert_aesthetic_head(pth: str | Path, out: str | Path) -> Path:
    """Released `sac+logos+ava1-l14-linearMSE.pth` -> `aesthetic_head.safetensors` (tensors only)."""
    from safetensors.torch import save_file

    state = torch.load(pth, map_location="cpu", weights_only=True)  # refuses anything but tensors
    state = {k: v.contiguous() for k, v in state.items() if k.startswith("layers.")}
    _head_layers(state)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, tmp)
    tmp.replace(out)
    return out
