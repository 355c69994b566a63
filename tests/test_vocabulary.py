"""A model says what it knows (engine/vocabulary.py): toyworld's vocabulary and the words outside it."""

from engine import loading, vocabulary
from engine.folder import read_info
from engine.toyworld import world
from engine.toyworld.render import sample_clip


def test_every_caption_of_every_split_is_inside_the_shipped_vocabulary():
    vocab = read_info(loading.resolve("toyworld")[0]).vocabulary
    assert vocab == world.vocabulary()  # the shipped rushes.json says what the code knows
    for split in ("train", "public-eval", "public-heldout"):
        for i in range(200):
            caption = sample_clip(split, i, train_words=split == "train")[1]
            assert vocabulary.unknown_words(caption, vocab) == [], caption
    for example in vocab["examples"]:
        assert vocabulary.unknown_words(example, vocab) == []


def test_words_outside_it_are_named_once_in_order_and_a_model_without_one_warns_of_nothing():
    vocab = world.vocabulary()
    assert vocabulary.unknown_words("A pink ball moving right on a white-ish PINK background!", vocab) == [
        "pink", "white-ish"]
    assert vocabulary.unknown_words("a pink elephant", {}) == []
    text = vocabulary.describe(vocab)
    assert "**colours**: red, crimson" in text and "**motions**:" in text and "examples" not in text


def test_a_phrase_reached_for_but_missed_is_named_with_the_ones_it_knows():
    vocab = world.vocabulary()
    missed = vocabulary.unmatched_phrases("a red ball moving left on a white background", vocab)
    assert list(missed) == ["backgrounds"] and "a navy background" in missed["backgrounds"]
    assert vocabulary.unmatched_phrases("a red ball moving left on a navy background", vocab) == {}
    assert vocabulary.unmatched_phrases("a red ball", vocab) == {}  # no background asked for: none missed
    text = vocabulary.warning("a pink ball moving left on a white background", vocab)
    assert "**pink**" in text and "none of the backgrounds it knows (a black background" in text
    assert vocabulary.warning("a red ball moving left", vocab) == ""
