"""toyworld as a plug-in of the generic engine (engine/plugins.py): its judge rewards, its
differentiable colour rewards and its data source, registered by name. Named in pyproject.toml's
`rushes.plugins` entry points; the registries load it when first asked.

Only names and small wrappers are registered here: the studio's page process lists reward names
without importing torch, so the torch-written rewards are imported when first called."""

from __future__ import annotations


def _rewards():
    from engine.toyworld import rewards

    return rewards


def _judge_reward(name: str):
    def reward(frames, prompt: str = "") -> float:
        return getattr(_rewards(), name)(frames, prompt)

    reward.__doc__ = f"toyworld's judge against the caption (engine/toyworld/rewards.py: {name})"
    return reward


def _pixel_reward(name: str):
    def reward(pixels, captions):
        from engine.toyworld import pixel_rewards

        return getattr(pixel_rewards, name)(pixels, captions)

    reward.__doc__ = f"toyworld's smooth judge reading (engine/toyworld/pixel_rewards.py: {name})"
    return reward


def _data():
    from engine.toyworld.data import ToyworldData

    return ToyworldData()


def register() -> None:
    from engine import data
    from engine.reward import builtin, pixel

    builtin.REWARDS |= {"toyworld-semantic": _judge_reward("toyworld_semantic"),
                        "toyworld-soft": _judge_reward("toyworld_soft")}
    pixel.PIXEL_REWARDS |= {"toyworld-colour": _pixel_reward("toyworld_colour"),
                            "toyworld-colour-count": _pixel_reward("toyworld_colour_count")}
    data.SOURCES["toyworld"] = _data
