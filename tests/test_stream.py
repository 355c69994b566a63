"""Causal streaming on a tiny random Wan transformer: the KV-cached chunk-by-chunk forward equals
the block-causal forward over the whole clip, the rolling window with its sink stays flat, and
bad windows are refused."""

from __future__ import annotations

import numpy as np
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


def test_a_new_prompt_rebuilds_the_cache_under_it_and_nothing_else_does():
    from engine.stream.sampler import stream_chunks

    causal = CausalWan(tiny_transformer().eval(), Window(chunk=1, sink=1, recent=2))

    def run(texts: dict, recache: bool) -> list[torch.Tensor]:
        def text_for(i):
            return texts[max(k for k in texts if k <= i)].clone()  # a new tensor each chunk: compared by value

        return [x for _, x in stream_chunks(causal, [1.0, 0.5], text_for, (4, 4, 4), torch.Generator().manual_seed(5),
                                            chunks=7, recache=recache)]

    steady = {0: _text(0)}
    torch.testing.assert_close(run(steady, True), run(steady, False))  # one prompt: no rebuild
    switch = {0: _text(0), 4: _text(1)}
    on, off = run(switch, True), run(switch, False)
    torch.testing.assert_close(on[:4], off[:4])
    assert all((a - b).abs().max() > 1e-5 for a, b in zip(on[4:], off[4:]))  # the cache now speaks the new prompt


def test_retime_writes_each_kept_chunk_at_the_slot_it_sits_in():
    # frame-time channels that matter: a chunk's keys then depend on the slot it was written at
    net = widen_inputs(tiny_transformer(), 3)
    torch.nn.init.normal_(net.patch_embedding.weight, std=0.2)
    clip, text = _clip(7), _text()

    def kept_cache(retime: bool) -> tuple[KVCache, list[torch.Tensor]]:
        causal = CausalWan(net.eval(), Window(chunk=1, sink=1, recent=2, retime=retime))
        cache, kept = causal.new_cache(), []
        with torch.no_grad():
            for i in range(7):
                causal.keep(clip[:, :, i:i + 1], kept, text, cache)
        return cache, kept

    retimed, kept = kept_cache(True)
    plain, kept_plain = kept_cache(False)
    assert [k.sum() for k in kept] == [clip[:, :, i].sum() for i in (0, 5, 6)] == [k.sum() for k in kept_plain]
    # what a fresh stream of the sink and the two recent chunks would have cached, slot by slot
    _, fresh = _stream(CausalWan(net.eval(), Window(chunk=1, sink=1, recent=2)), torch.cat(kept, dim=2), text)
    for block in range(len(fresh.entries)):
        for (k, v), (fk, fv) in zip(retimed.entries[block], fresh.entries[block]):
            torch.testing.assert_close((k, v), (fk, fv))
    assert (plain.entries[0][2][0] - fresh.entries[0][2][0]).abs().max() > 1e-4  # without: the last slot's time stays
    assert (plain.written, retimed.written) == (7, 7 + 4)  # chunks 3-6 rolled the window: one more write each


def test_retime_changes_nothing_until_the_window_rolls():
    from engine.stream.sampler import stream_chunks

    net = widen_inputs(tiny_transformer(), 3)
    torch.nn.init.normal_(net.patch_embedding.weight, std=0.2)

    def run(retime: bool) -> list[torch.Tensor]:
        causal = CausalWan(net.eval(), Window(chunk=1, sink=1, recent=1, retime=retime))  # 3 slots
        return [x for _, x in stream_chunks(causal, [1.0, 0.5], lambda i: _text(0), (4, 4, 4),
                                            torch.Generator().manual_seed(9), chunks=6)]

    on, off = run(True), run(False)
    torch.testing.assert_close(on[:3], off[:3])  # chunk 3 is the first made over a rolled window
    assert all((a - b).abs().max() > 1e-5 for a, b in zip(on[3:], off[3:]))
    with pytest.raises(TypeError, match="retime must be true or false, got 'yes'"):
        Window(retime="yes")


def test_streams_made_side_by_side_do_not_see_each_other():
    from engine.stream.sampler import stream_chunks

    causal = CausalWan(tiny_transformer().eval(), Window(chunk=2, sink=1, recent=1))

    def run(second: torch.Tensor) -> list[torch.Tensor]:
        text = torch.cat([_text(0), second])
        return [x for _, x in stream_chunks(causal, [1.0, 0.5], lambda i: text, (4, 4, 4),
                                            torch.Generator().manual_seed(3), chunks=5, batch=2)]

    a, b = run(_text(1)), run(_text(2))
    assert all(x.shape == (2, 4, 2, 4, 4) for x in a)
    torch.testing.assert_close([x[0] for x in a], [x[0] for x in b])  # row 0 never reads row 1's cache
    assert all((x[1] - y[1]).abs().max() > 1e-4 for x, y in zip(a, b))
    with pytest.raises(ValueError, match="at least one stream, got 0"):
        next(stream_chunks(causal, [1.0], lambda i: _text(0), (4, 4, 4), torch.Generator(), batch=0))


def test_a_rollout_past_the_window_keeps_a_graph_only_where_the_loss_scores():
    from engine.stream.rollout import rollout

    network = tiny_transformer()
    causal = CausalWan(network, Window(chunk=1, sink=1, recent=1))  # 3 slots
    noise = torch.randn(1, 4, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    x = rollout(causal, noise, [1.0, 0.5], _text(0), 1, torch.Generator().manual_seed(2), grad_chunks=3)
    assert x.shape == noise.shape
    x[:, :, :2].sum().backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in network.parameters())  # the first two: no graph
    x[:, :, -3:].pow(2).sum().backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in network.parameters())
    again = rollout(causal, noise, [1.0, 0.5], _text(0), 1, torch.Generator().manual_seed(2))
    torch.testing.assert_close(again.detach(), x.detach())  # where the graph is kept changes no value
    switched = rollout(causal, noise, [1.0, 0.5], _text(0), 1, torch.Generator().manual_seed(2), switch=(3, _text(1)))
    torch.testing.assert_close(switched[:, :, :3].detach(), x[:, :, :3].detach())  # the same until the switch
    assert (switched[:, :, 3:] - x[:, :, 3:]).abs().min() > 0
    with pytest.raises(ValueError, match="switches its prompt at chunk 1 to 4, got 5"):
        rollout(causal, noise, [1.0, 0.5], _text(0), 1, torch.Generator(), switch=(5, _text(1)))


def _causal_folder(tiny_folder, tmp_path, rank):
    """A copy of the tiny folder with a causal student (the 2-step network, slightly moved) added."""
    import shutil

    from engine.stream.export import add_causal_student

    folder = tmp_path / "with-stream"
    shutil.copytree(tiny_folder, folder)
    net = tiny_transformer(seed=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    entry = add_causal_student(folder, net, Window(chunk=2, sink=1, recent=1), [1000, 500], base_steps=4, rank=rank,
                               record={"method": "test"})
    return folder, entry


@pytest.mark.parametrize("rank", [None, 4])
def test_a_folder_with_a_causal_student_streams_with_switches_and_reports_its_timings(tiny_folder, tmp_path, rank):
    from engine import loading
    from engine.requests import StreamRequest
    from engine.stream.play import play, summary

    folder, entry = _causal_folder(tiny_folder, tmp_path, rank)
    assert (entry.get("lora") is not None) == (rank is not None)
    loaded = loading.load(str(folder))
    assert loaded.stream is not None and loaded.stream[1]["timesteps"] == [1000, 500]
    req = StreamRequest(prompt="a red circle moving left", seconds=1.5, switches=((1.0, "a blue square rising"),),
                        model=str(folder)).validate()
    chunks = list(play(loaded, req))
    fps = loaded.info.fps  # 8: 12 frames in chunks of 2
    assert len(chunks) == 6 and sum(len(c.frames) for c in chunks) == 12
    assert all(c.frames.shape[1:] == (32, 32, 3) and c.frames.dtype == np.uint8 for c in chunks)
    assert [c.prompt for c in chunks] == ["a red circle moving left"] * 4 + ["a blue square rising"] * 2
    s = summary(chunks, fps)
    assert s["frames"] == 12 and s["seconds"] == 1.5 and s["chunks"] == 6
    assert 0 < s["first_chunk_s"] <= chunks[-1].since_play_s and s["chunk_s"] > 0 and s["realtime_factor"] > 0
    assert s["prompts"] == ["a red circle moving left", "a blue square rising"]
    again = np.concatenate([c.frames for c in play(loaded, req)])
    assert np.array_equal(again, np.concatenate([c.frames for c in chunks]))  # a seed gives the same stream


def test_streaming_until_stopped_and_the_refusals(tiny_folder, tmp_path):
    from engine import loading
    from engine.requests import StreamRequest
    from engine.stream.play import play

    loaded = loading.load(str(tiny_folder))
    with pytest.raises(ValueError, match="has no causal student to stream with"):
        next(play(loaded, StreamRequest(prompt="a red circle")))
    folder, _ = _causal_folder(tiny_folder, tmp_path, None)
    loaded = loading.load(str(folder))
    made = []
    for chunk in play(loaded, StreamRequest(prompt="a red circle", seconds=None), stop=lambda: len(made) >= 5):
        made.append(chunk)
    assert len(made) == 5
    for bad, match in [({"seconds": 0}, r"seconds must be in \(0, 3600\], got 0"),
                       ({"switches": ((2.0, "a"), (1.0, "b"))}, "increasing, got 1.0 after 2"),
                       ({"switches": ((12.0, "a"),)}, "not before the stream's end"),
                       ({"prompt": "  "}, "prompt")]:
        with pytest.raises(ValueError, match=match):
            StreamRequest(**{"prompt": "a red circle"} | bad).validate()


def test_replacing_the_network_under_a_causal_lora_drops_the_stale_stream_entry(tiny_folder, tmp_path):
    import json

    from engine.distill.export import add_student

    folder, entry = _causal_folder(tiny_folder, tmp_path, 4)
    assert (folder / entry["lora"]).exists()
    add_student(folder, tiny_transformer(seed=9), 4, [1000, 750, 500, 250])
    assert json.loads((folder / "rushes.json").read_text())["stream"] == {}
    assert not (folder / entry["lora"]).exists()


def test_the_command_line_distils_a_causal_student_and_streams_it(tiny_folder, tmp_path, capsys):
    import json

    from engine import paths
    from engine.cli import main
    from engine.store import Store

    config = tmp_path / "causal.json"
    config.write_text(json.dumps({"batch": 2, "pairs": 2, "pair_steps": 2, "fake_updates": 1}))
    out = tmp_path / "with-causal"
    assert main(["distill-stream", "--model", str(tiny_folder), "--config", str(config), "--init-student", "2",
                 "--lora-rank", "4", "--chunk", "1", "--sink", "1", "--recent", "1", "--student-steps", "2",
                 "--ode-steps", "1", "--dmd-steps", "1", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["done"] and report["updates"] == 2 and report["stream"]["lora"] == "students/causal-lora"
    args = ["distill-stream", "--model", str(tiny_folder), "--config", str(config), "--init-student", "2", "--chunk",
            "1", "--sink", "1", "--recent", "1", "--student-steps", "2", "--ode-steps", "1", "--dmd-steps", "1"]
    assert main(args + ["--reward", "brightness", "--out", str(tmp_path / "re-dmd")]) == 0
    assert "teacher ODE pairs" not in capsys.readouterr().out  # an ablation reuses the teacher's pairs
    assert len(list(paths.runs().glob("causal-pairs-*/pairs.safetensors"))) == 1
    first = ["distill-stream", "--model", str(tiny_folder), "--config", str(config), "--init-student", "2",
             "--lora-rank", "4", "--chunk", "1", "--sink", "1", "--recent", "1", "--student-steps", "2",
             "--ode-steps", "1", "--dmd-steps", "1", "--out", str(tmp_path / "again")]
    assert main(first) == 2  # the same run again without --resume: refused, its checkpoints untouched
    assert "already holds a run with these settings (2 updates made); pass --resume" in capsys.readouterr().err
    assert main(first + ["--resume"]) == 0  # finished: exported again, nothing trained
    assert "[distill-stream] dmd" not in capsys.readouterr().out and (tmp_path / "again" / "rushes.json").exists()
    clip = tmp_path / "stream.mp4"
    assert main(["stream", "--model", str(out), "--prompt", "a red circle moving left", "--switch",
                 "0.5:a blue square rising", "--seconds", "1", "--out", str(clip), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["frames"] == 8 and shown["fps"] == 8 and shown["path"] == str(clip) and clip.exists()
    assert shown["prompts"] == ["a red circle moving left", "a blue square rising"]
    assert shown["first_chunk_s"] > 0 and shown["chunk_s"] > 0 and shown["realtime_factor"] > 0
    row = Store(paths.database()).generations(limit=1)[0]
    assert row["role"] == "stream" and row["id"] == shown["generation_id"] and row["frames"] == 8
    assert main(["stream", "--model", str(out), "--prompt", "a red circle", "--switch", "soon:a blue square"]) == 2
    assert "--switch takes SECONDS:PROMPT" in capsys.readouterr().err
    assert main(["stream", "--model", str(tiny_folder), "--prompt", "a red circle", "--seconds", "1"]) == 2
    assert "has no causal student" in capsys.readouterr().err
