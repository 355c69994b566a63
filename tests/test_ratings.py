import pytest

from conftest import TRAIN_PROMPTS
from engine import loading, paths
from engine.events import Result
from engine.requests import GenerateRequest
from engine.reward.ratings import fit_ratings_model
from engine.session import Session
from engine.tune.config import TuneConfig
from engine.tune.trainer import train


def _clips(session, folder, n):
    ids = []
    for seed in range(n):
        event = list(session.generate(GenerateRequest(prompt=f"a ball {seed % 2}", model=str(folder), seed=seed, steps=2)))[-1]
        ids.append(event.value.generation_id)
    return ids


def test_ratings_model_learns_what_the_user_liked(tiny_folder, rushes_home):
    session = Session("test")
    loaded = loading.load(str(tiny_folder))
    with pytest.raises(ValueError, match="at least 4 ratings"):
        fit_ratings_model(session.store, loaded)
    ids = _clips(session, tiny_folder, 8)
    liked, disliked = ids[:4], ids[4:]
    for gid in liked:
        session.rate(gid, "stars", 5)
    for gid in disliked[:2]:
        session.rate(gid, "thumb", -1)
    session.rate(liked[0], "pair", 1, other_id=disliked[2])
    session.rate(liked[1], "pair", 1, other_id=disliked[3])
    lrm, report = fit_ratings_model(session.store, loaded, student_steps=2, views=3)
    assert report["clips"] == 8 and report["pairs"] == 2 and report["scored"] == 6
    assert report["views"] == 3 and report["use_text"]  # 3 denoised copies of each clip were fitted
    assert report["pair_agreement"] == 1.0 and report["score_correlation"] > 0.8
    plain, no_text = fit_ratings_model(session.store, loaded, student_steps=2, views=0, use_text=False)
    assert no_text["views"] == 0 and not no_text["use_text"] and not hasattr(plain.members[0], "text_mlp")
    assert no_text["pair_agreement"] == 1.0
    with pytest.raises(ValueError, match="rating must be"):
        session.rate(ids[0], "stars", 9)


def test_tune_toward_my_ratings(tiny_folder, rushes_home):
    session = Session("test")
    ids = _clips(session, tiny_folder, 4)
    for gid, stars in zip(ids, (5, 4, 1, 2)):
        session.rate(gid, "stars", stars)
    cfg = TuneConfig(model=str(tiny_folder), reward="ratings", steps=3, batch=2, checkpoint_every=3,
                     prompts=["a ball 0"])
    events = list(train(cfg, loading.load(str(tiny_folder)), paths.runs() / "r", TRAIN_PROMPTS))
    assert isinstance(events[-1], Result), events[-1]
    assert {"reward", "lrm_reward", "reg"} <= set(events[-2].metrics)


def test_denoised_views_are_one_step_student_predictions_at_listed_levels(tiny_folder):
    import torch

    from engine import schedule
    from engine.model import add_noise
    from engine.reward.ratings import denoised_views

    loaded = loading.load(str(tiny_folder))
    flow, timesteps = loaded.student(2)
    levels = [s for s in schedule.student_sigmas(timesteps, loaded.info.shift).tolist() if s < 1.0]
    latents = torch.randn(3, *loaded.codec.latent_shape(loaded.info.frames, loaded.info.height, loaded.info.width))
    text = loaded.text.encode(["a ball"] * 3)
    views = denoised_views(loaded, latents, text, 2, 2, torch.Generator().manual_seed(1))
    assert len(views) == 2 and all(v.shape == latents.shape for v in views)
    eps = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    expected = flow.predict_x0(add_noise(latents, eps, levels[0]), torch.full((3,), levels[0]), text)
    torch.testing.assert_close(views[0], expected.detach())
    assert denoised_views(loaded, latents, text, 7, 2, torch.Generator()) == []  # no 7-step student: no views
