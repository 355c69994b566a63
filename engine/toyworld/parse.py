"""Read a toyworld caption back into (colour, shape, motion) triples, using the word tables.

Lets MiniBench and the semantic reward judge any caption written in toyworld's vocabulary,
including the held-out paraphrases; unknown wording yields no triple for that object.
"""

from __future__ import annotations

import re

from engine.toyworld import world


def _lookup(table: dict[str, tuple[list[str], list[str]]], extra: dict[str, list[str]]) -> list[tuple[str, str]]:
    pairs = [(word, key) for key, (seen, unseen) in table.items() for word in seen + unseen + extra[key]]
    return sorted(pairs, key=lambda p: -len(p[0]))  # longest phrase first


COLOUR_WORDS = _lookup(world.COLOUR_WORDS, world.TRAIN_ONLY_WORDS["colour"])
SHAPE_WORDS = _lookup(world.SHAPE_WORDS, world.TRAIN_ONLY_WORDS["shape"])
MOTION_WORDS = _lookup(world.MOTION_WORDS, world.TRAIN_ONLY_WORDS["motion"])


def mentions(text: str, word: str) -> bool:
    """Whether `text` contains `word` (a word or phrase) as whole words."""
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


def _find(text: str, pairs: list[tuple[str, str]]) -> str | None:
    for word, key in pairs:
        if mentions(text, word):
            return key
    return None


def parse_caption(caption: str) -> list[tuple[str, str, str]]:
    """[(colour, shape, motion), ...] for each object the caption names completely."""
    text = caption.lower()
    text = re.split(r"\b(?:on|against)\b(?!.*\b(?:on|against)\b)", text)[0]  # drop the background
    objects = []
    for part in re.split(r"\band an? ", text):
        colour, shape, motion = _find(part, COLOUR_WORDS), _find(part, SHAPE_WORDS), _find(part, MOTION_WORDS)
        if colour and shape and motion:
            objects.append((colour, shape, motion))
    return objects
