"""What a model says it knows: the vocabulary a model folder may carry in rushes.json
(`ModelInfo.vocabulary`, by kind, with example prompts), and the words of a prompt outside it.

The studio shows the vocabulary beside the prompt and warns (never refuses) when a prompt uses a
word the model has not seen: the embedded toyworld model knows 8 colours, 3 shapes, 8 motions and
4 backgrounds, and reads "on a white background" as the nearest thing it knows.
"""

from __future__ import annotations

import re

GLUE = {"a", "an", "the", "and", "on", "against", "of", "with", "in", "to", "video", "footage", "showing"}
WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def known_words(vocabulary: dict[str, list[str]]) -> set[str]:
    """Every word of every phrase and example in the vocabulary, and the glue words of a caption."""
    return GLUE | {w for phrases in vocabulary.values() for phrase in phrases for w in words(phrase)}


def unknown_words(prompt: str, vocabulary: dict[str, list[str]]) -> list[str]:
    """The prompt's words the model has not seen, in order, once each; [] for a model that carries
    no vocabulary (nothing to judge by)."""
    if not vocabulary:
        return []
    known = known_words(vocabulary)
    return list(dict.fromkeys(w for w in words(prompt) if w not in known))


def unmatched_phrases(prompt: str, vocabulary: dict[str, list[str]]) -> dict[str, list[str]]:
    """Kinds whose phrases the prompt reaches for but misses: it has a phrase's last word (a
    "background", a "backdrop") and none of the kind's phrases whole ("on a white background" to a
    model that knows black, navy, charcoal and forest-green ones). Kind -> its phrases."""
    text = " ".join(words(prompt))
    missed = {}
    for kind, phrases in vocabulary.items():
        several = [p for p in phrases if len(words(p)) > 1]
        if kind == "examples" or not several:
            continue
        heads = {words(p)[-1] for p in several}
        whole = any(re.search(rf"\b{re.escape(' '.join(words(p)))}\b", text) for p in phrases)
        if heads & set(text.split()) and not whole:
            missed[kind] = phrases
    return missed


def describe(vocabulary: dict[str, list[str]]) -> str:
    """Markdown: each kind with its words, then the example prompts; "" without a vocabulary."""
    if not vocabulary:
        return ""
    lines = [f"**{kind}**: {', '.join(items)}" for kind, items in vocabulary.items() if kind != "examples"]
    return "  \n".join(lines)


def warning(prompt: str, vocabulary: dict[str, list[str]]) -> str:
    """Markdown warning the studio shows under the prompt ("" when all is known): the unknown
    words, the kinds reached for but missed, and what the model will do."""
    odd, missed = unknown_words(prompt, vocabulary), unmatched_phrases(prompt, vocabulary)
    lines = ([f"⚠ not in this model's vocabulary: **{', '.join(odd)}**"] if odd else []) + [
        f"⚠ none of the {kind} it knows ({', '.join(phrases[:4])}, …)" for kind, phrases in missed.items()]
    if lines:
        lines.append('it will read the prompt as the nearest words it knows (see "Words this model knows")')
    return "  \n".join(lines)
