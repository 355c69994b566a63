"""The toyworld vocabulary: shapes, colours, motions, backgrounds and their words.

docs/ARCHITECTURE.md §5.7 fixes the palette (sRGB) and the motions. Words are split into the ones seen in
training and the paraphrases kept back for the `public-heldout` split, so that the held-out
split measures generalisation to unseen wording as well as unseen combinations.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
    "white": (245, 245, 245),
    "cyan": (40, 210, 220),
}

MOTIONS = ("left", "right", "up", "down", "bounce", "grow", "shrink", "still")

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "navy": (20, 25, 60),
    "charcoal": (50, 50, 50),
    "forest": (20, 50, 25),
}

# word lists: (seen in training, held out for public-heldout paraphrases)
SHAPE_WORDS = {
    "circle": (["circle", "ball", "disc"], ["dot"]),
    "square": (["square", "box", "block"], ["tile"]),
    "triangle": (["triangle", "pyramid"], ["wedge"]),
}
COLOUR_WORDS = {
    "red": (["red", "crimson"], ["scarlet"]),
    "green": (["green", "emerald"], ["lime"]),
    "blue": (["blue", "cobalt"], ["azure"]),
    "yellow": (["yellow", "golden"], ["lemon"]),
    "purple": (["purple", "violet"], ["lilac"]),
    "orange": (["orange", "amber"], ["tangerine"]),
    "white": (["white", "snowy"], ["ivory"]),
    "cyan": (["cyan", "turquoise"], ["aqua"]),
}
# Opposite motions have parallel lists (same length, the same phrase with the direction swapped,
# index by index; here and in TRAIN_ONLY_WORDS): the teacher bake's reversed pairs word a clip
# and its reverse from one random stream, so the two captions differ only in these phrases.
MOTION_WORDS = {
    "left": (["moving left", "drifting leftward", "sliding to the left"], ["heading left"]),
    "right": (["moving right", "drifting rightward", "sliding to the right"], ["heading right"]),
    "up": (["moving up", "rising", "floating upward"], ["climbing upward"]),
    "down": (["moving down", "falling", "sinking downward"], ["dropping down"]),
    "bounce": (["bouncing", "hopping up and down"], ["jumping up and down"]),
    "grow": (["growing", "getting bigger", "expanding"], ["swelling"]),
    "shrink": (["shrinking", "getting smaller", "contracting"], ["dwindling"]),
    "still": (["staying still", "resting in place", "not moving"], ["sitting motionless"]),
}
BACKGROUND_WORDS = {
    "black": (["a black background", "a dark night sky"], ["a pitch-dark void"]),
    "navy": (["a navy background", "a deep blue backdrop"], ["a midnight-blue field"]),
    "charcoal": (["a charcoal background", "a grey backdrop"], ["a slate-grey field"]),
    "forest": (["a forest-green background", "a dark green backdrop"], ["a mossy field"]),
}
# Extra words used only in train-split captions (`sample_clip(..., train_words=True)`). With two
# training words per colour the teacher keys on those tokens: it finds the prompted colour for
# 21 % of objects named with a held-out colour word against 90 % with a seen one, and probes on
# MiniLM's states trained on the same captions read held-out colour words at 27-33 %; with these
# words in training, at 50 % (docs/experiments/teacher-direction.md, "What the teacher gets wrong"). None of them is,
# or contains a token only used by, a held-out paraphrase above (tests/test_render_checkpoint.py).
TRAIN_ONLY_WORDS = {
    "colour": {
        "red": ["ruby", "cherry", "vermilion", "carmine"],
        "green": ["jade", "verdant", "grassy", "leafy"],
        "blue": ["sapphire", "cerulean", "ultramarine", "cornflower"],
        "yellow": ["canary", "sunny", "saffron", "buttery"],
        "purple": ["plum", "mauve", "amethyst", "lavender"],
        "orange": ["apricot", "pumpkin", "marigold", "carrot"],
        "white": ["pearly", "milky", "chalky", "alabaster"],
        "cyan": ["teal", "seafoam", "glacier"],
    },
    "shape": {
        "circle": ["orb", "sphere", "coin"],
        "square": ["cube", "crate", "panel"],
        "triangle": ["cone", "spike", "arrowhead"],
    },
    "motion": {
        "left": ["going left", "gliding to the left", "travelling left"],
        "right": ["going right", "gliding to the right", "travelling right"],
        "up": ["ascending", "going up", "lifting upward"],
        "down": ["descending", "going down", "plunging downward"],
        "bounce": ["bobbing up and down", "springing up and down"],
        "grow": ["enlarging", "getting larger", "ballooning"],
        "shrink": ["diminishing", "getting tinier", "shriveling"],
        "still": ["standing still", "staying put", "keeping still"],
    },
}
TEMPLATES = (
    ["{obj} on {bg}", "{obj}, on {bg}", "a video of {obj} on {bg}"],
    ["footage showing {obj} against {bg}"],
)


def all_combos() -> list[tuple[str, str, str]]:
    """Every (colour, shape, motion) triple, in a fixed order."""
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]


def heldout_combos() -> set[tuple[str, str, str]]:
    """Triples never rendered for training: one in eight, chosen by a fixed rule.

    The rule shifts by colour so that every colour, shape and motion is still seen in training,
    only never in these exact combinations.
    """
    held = set()
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            for mi, motion in enumerate(MOTIONS):
                if (ci + 3 * si + mi) % 8 == 0:
                    held.add((colour, shape, motion))
    return held


def vocabulary() -> dict[str, list[str]]:
    """The words the embedded model knows, by kind (every word the captions of any split use, so
    MiniBench's parser reads them), and example prompts: what a model folder's rushes.json carries
    for the Create tab and the README."""
    def words(table, extra=None):
        return [w for key, (seen, unseen) in table.items() for w in seen + unseen + (extra or {}).get(key, [])]

    return {"colours": words(COLOUR_WORDS, TRAIN_ONLY_WORDS["colour"]),
            "shapes": words(SHAPE_WORDS, TRAIN_ONLY_WORDS["shape"]),
            "motions": words(MOTION_WORDS, TRAIN_ONLY_WORDS["motion"]),
            "backgrounds": words(BACKGROUND_WORDS),
            "examples": ["a red circle moving right on a black background",
                         "a yellow square falling on a navy background",
                         "a video of a cyan triangle growing on a forest-green background",
                         "a blue ball bouncing and a white box moving left on a grey backdrop"]}
