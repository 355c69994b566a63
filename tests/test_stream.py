"""Causal streaming on a tiny random Wan transformer: the KV-cached chunk-by-chunk forward equals
the block-causal forward over the whole clip, the rolling window with its sink stays flat, and
bad windows are refused."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from engine.model import widen_inputs
from engine.stream.cache import KVCache, Window
from engine.stream.causal import CausalWan, block_causal_mask
from tests.conftest import tiny_transformer

TEXT = 384


def _clip(frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, frames, 4, 4, generator=g)


def _text(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 6, TEXT, generator=torch.Generator().manual_seed(100 + seed))


def _stream(causal: CausalWan, clip: torch.Tensor, text: torch.Tensor) -> tuple[list[torch.Tensor], KVCache]:
    """Each chunk of a clean clip run in turn at noise level 0 and written to the cache."""
    cache, outs, c = causal.new_cache(), [], causal.window.chunk
    zero = torch.zeros(1)
    with torch.no_grad():
        for i in range(clip.shape[2] // c):
            outs.append(causal.chunk_velocity(clip[:, :, i * c:(i + 1) * c], zero, text, cache, write=True))
    return outs, cache


@pytest.mark.parametrize("positions", [0, 3])
def test_chunk_by_chunk_with_the_cache_equals_the_block_causal_clip(positions):
    net = tiny_transformer()
    if positions:
        net = widen_inputs(net, positions)
        torch.nn.init.normal_(net.patch_embedding.weight, std=0.2)  # the new channels matter
    causal = CausalWan(net.eval(), Window(chunk=2, sink=1, recent=2))
    clip, text = _clip(8), _text()
    chunks, cache = _stream(causal, clip, text)
    with torch.no_grad():
        whole = causal.clip_velocity(clip, torch.zeros(1), text)
    assert cache.kept == 3 and cache.written == 4
    torch.testing.assert_close(torch.cat(chunks, dim=2), whole, atol=2e-5, rtol=1e-4)
    # and the causal forward is not the bidirectional one: the first chunk cannot see the later ones
    with torch.no_grad():
        both_ways = net(hidden_states=torch.cat([clip, torch.zeros(1, positions, 8, 4, 4)], 1) if positions else clip,
                        timestep=torch.zeros(1), encoder_hidden_states=text, return_dict=False)[0]
    assert (both_ways[:, :, :2] - whole[:, :, :2]).abs().max() > 1e-3


def test_the_rolling_window_keeps_the_sink_and_the_recent_chunks_at_flat_memory():
    # one block: a cached chunk's keys and values then depend on its own latents only, so what
    # the last chunk sees can be rebuilt as a short clip of the chunks the window kept
    torch.manual_seed(0)
    net = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                out_channels=4, text_dim=TEXT, freq_dim=32, ffn_dim=32, num_layers=1,
                                rope_max_seq_len=32)
    causal = CausalWan(net.eval(), Window(chunk=2, sink=1, recent=1))
    clip, text = _clip(14, seed=1), _text(1)
    chunks, cache = _stream(causal, clip, text)
    assert cache.kept == 2 and cache.written == 7
    sizes = []
    probe = causal.new_cache()
    with torch.no_grad():
        for i in range(7):
            causal.chunk_velocity(clip[:, :, 2 * i:2 * i + 2], torch.zeros(1), text, probe, write=True)
            sizes.append(probe.nbytes())
    assert sizes[1:] == [sizes[1]] * 6  # full after the sink and one recent chunk, then flat
    # the last chunk saw exactly the sink (chunk 0) and the chunk before it, in slots 0, 1, 2
    seen = torch.cat([clip[:, :, 0:2], clip[:, :, 10:12], clip[:, :, 12:14]], dim=2)
    with torch.no_grad():
        alone = causal.clip_velocity(seen, torch.zeros(1), text)
    torch.testing.assert_close(chunks[-1], alone[:, :, 4:6], atol=2e-5, rtol=1e-4)


def test_a_new_prompt_changes_only_what_comes_after_it():
    causal = CausalWan(tiny_transformer().eval(), Window(chunk=2, sink=1, recent=2))
    clip = _clip(6, seed=2)
    same, _ = _stream(causal, clip, _text(0))
    cache, outs = causal.new_cache(), []
    with torch.no_grad():
        for i, text in enumerate((_text(0), _text(0), _text(5))):
            outs.append(causal.chunk_velocity(clip[:, :, 2 * i:2 * i + 2], torch.zeros(1), text, cache, write=True))
    torch.testing.assert_close(outs[:2], same[:2])
    assert (outs[2] - same[2]).abs().max() > 1e-3


def test_block_causal_mask_and_window_slots():
    mask = block_causal_mask(3, 2)
    assert mask.tolist()[0] == [True, True, False, False, False, False]
    assert mask.tolist()[5] == [True] * 6
    w = Window(chunk=4, sink=1, recent=2)
    assert (w.slots, w.frames) == (4, 16)
    assert [w.slot(i) for i in range(6)] == [0, 1, 2, 3, 3, 3]
    assert torch.equal(torch.cat([w.frame_times(s) for s in range(4)]), torch.linspace(-1, 1, 16))


@pytest.mark.parametrize("field, value", [("chunk", 0), ("sink", -1), ("recent", 1.5)])
def test_a_bad_window_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"window {field} .* got {value}"):
        Window(**{field: value})


def test_what_cannot_stream_is_refused():
    causal = CausalWan(tiny_transformer(), Window(chunk=2, sink=1, recent=1))
    with pytest.raises(ValueError, match="a chunk has 2 latent frames, got 3"):
        causal.chunk_velocity(_clip(3), torch.zeros(1), _text(), causal.new_cache())
    with pytest.raises(ValueError, match="multiple of 2 latent frames up to 6, got 8"):
        causal.clip_velocity(_clip(8), torch.zeros(1), _text())
    with pytest.raises(ValueError, match="neighbouring frames"):
        CausalWan(widen_inputs(tiny_transformer(), 0, context=1), Window())


def test_the_sampler_streams_chunks_deterministically_and_stops_when_told():
    from engine.stream.sampler import stream_chunks

    causal = CausalWan(tiny_transformer().eval(), Window(chunk=2, sink=1, recent=1))
    texts = {0: _text(0), 3: _text(4)}  # a switch at chunk 3

    def text_for(i):
        return texts[max(k for k in texts if k <= i)]

    def run(**kw):
        return [x for _, x in stream_chunks(causal, [1.0, 0.5], text_for, (4, 4, 4), torch.Generator().manual_seed(7),
                                            **kw)]

    first, again = run(chunks=6), run(chunks=6)
    assert len(first) == 6 and all(x.shape == (1, 4, 2, 4, 4) for x in first)
    torch.testing.assert_close(first, again)
    asked = []
    stopped = run(stop=lambda: asked.append(1) or len(asked) > 4)
    assert len(stopped) == 4
    torch.testing.assert_close(stopped, first[:4])
    with pytest.raises(ValueError, match=r"levels must lie in \(0, 1\], got \[1.5\]"):
        next(stream_chunks(causal, [1.5], text_for, (4, 4, 4), torch.Generator()))


def test_re_dmd_weights_keep_mean_one_and_beta_zero_is_plain_dmd():
    from engine.distill.vsd import reward_weights, vsd_loss

    r = torch.tensor([0.1, 0.9, 0.5])
    assert torch.allclose(reward_weights(r, 0.0), torch.ones(3))
    w = reward_weights(r, 4.0)
    assert abs(float(w.mean()) - 1) < 1e-6 and w[1] > w[2] > w[0]
    g = torch.Generator().manual_seed(0)
    x, real, fake = (torch.randn(3, 2, 2, 2, 2, generator=g) for _ in range(3))
    plain, _ = vsd_loss(x, real, fake)
    same, _ = vsd_loss(x, real, fake, torch.ones(3))
    torch.testing.assert_close(plain, same)


def test_a_causal_student_distils_in_two_phases_and_resumes(tiny_folder):
    from engine import checkpoint, loading
    from engine.events import Progress, Result
    from engine.stream.config import CausalConfig
    from engine.stream.trainer import train
    from tests.conftest import TOYWORLD

    loaded = loading.load(str(tiny_folder))
    cfg = CausalConfig(chunk=1, sink=1, recent=1, student_steps=2, ode_steps=2, dmd_steps=2, batch=2, pairs=4,
                       pair_steps=2, fake_updates=1, checkpoint_every=2, reward="brightness", reward_beta=2.0)
    work = tiny_folder.parent / "causal-run"
    start = {k: v.clone() for k, v in loaded.student(2)[0].transformer.state_dict().items()}
    events = list(train(cfg, loaded, work, TOYWORLD, init_student=2))
    assert isinstance(events[-1], Result), events[-1]
    phases = [(e.stage, e.step) for e in events if isinstance(e, Progress) and e.stage in ("ode", "dmd")]
    assert phases == [("ode", 1), ("ode", 2), ("dmd", 1), ("dmd", 2)]
    logs = [e.metrics for e in events if isinstance(e, Progress) and e.stage == "dmd"]
    assert all("vsd_loss" in m and "reward" in m for m in logs)
    trained = events[-1].value.network.state_dict()
    assert any((trained[k] - start[k].float()).abs().max() > 0 for k in start)
    assert checkpoint.latest(work)[0] == 4
    more = list(train(CausalConfig(**cfg.to_dict() | {"dmd_steps": 3}), loaded, work, TOYWORLD, init_student=2))
    assert [(e.stage, e.step) for e in more if isinstance(e, Progress) and e.stage == "dmd"] == [("dmd", 3)]
    assert checkpoint.latest(work)[0] == 5


@pytest.mark.parametrize("settings, match", [({"chunk": 0}, "window chunk"), ({"ode_steps": 0, "dmd_steps": 0},
                                              "at least one update"), ({"reward": "nope"}, "unknown reward 'nope'")])
def test_bad_causal_settings_are_refused_naming_them(settings, match):
    from engine.stream.config import CausalConfig

    with pytest.raises(ValueError, match=match):
        CausalConfig(**settings)
