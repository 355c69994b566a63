"""How much of a toyworld prompt can any network read off MiniLM's token states?

The teacher sees a prompt only through the text encoder's token states (docs/ARCHITECTURE.md §5.7). This
bench trains probes on those states for one-object train-split captions (the words the teacher
is trained on) to predict the object's colour, shape and motion, then scores them on
one-object `public-heldout` captions, split by whether the caption uses the seen word or the
paraphrase kept back for that split. A probe that reads an aspect well from seen words but
not from held-out ones says the encoder does not place the held-out word near its meaning,
so a teacher trained on the same captions has nothing to generalise from. It does so twice:
for train captions worded from the seen words only, and as the train split words them, with
the extra words `world.TRAIN_ONLY_WORDS` adds to training.

Three probes per aspect, trained by Adam on the same states:
- `pooled`: logistic regression on the mean of the (unpadded) token states;
- `attention`: a learnt query attending over the token states (what one cross-attention
  head can do), then a linear layer;
- `attention+mlp`: the same pooling, then a two-layer MLP (width 256, GELU).

The last line is a ceiling: the MiniBench semantic score of one-object held-out clips if a
network rendered exactly what the best probe reads (the judge counts shape and motion only for
an object found in the prompt's colour, and the count is taken as right).

    python bench/text_probe.py [--train 3000] [--heldout 1000] [--steps 400]
"""

from __future__ import annotations

import argparse

import torch


from engine.textenc import MINILM_MAX_LENGTH, TextEncoder, load_minilm
from engine.toyworld import world
from engine.toyworld.parse import mentions
from engine.toyworld.render import sample_clip

ASPECTS = {"colour": (list(world.COLOURS), world.COLOUR_WORDS),
           "shape": (list(world.SHAPES), world.SHAPE_WORDS),
           "motion": (list(world.MOTIONS), world.MOTION_WORDS)}


def one_object_captions(split: str, count: int, train_words: bool = True) -> list[tuple[str, object]]:
    """The first `count` one-object clips of a split: (caption, object spec)."""
    out, i = [], 0
    while len(out) < count:
        spec, text = sample_clip(split, i, train_words=train_words)
        if len(spec.objects) == 1:
            out.append((text, spec.objects[0]))
        i += 1
    return out


def uses_heldout_word(caption: str, words: tuple[list[str], list[str]]) -> bool:
    return any(mentions(caption, w) for w in words[1])


class AttentionProbe(torch.nn.Module):
    def __init__(self, dim: int, classes: int, hidden: int = 0):
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(dim) / dim**0.5)
        self.key = torch.nn.Linear(dim, dim)
        self.out = (torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, classes))
                    if hidden else torch.nn.Linear(dim, classes))

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.key(states) @ self.query / states.shape[-1] ** 0.5  # [B, L]
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.out((weights[..., None] * states).sum(1))


class PooledProbe(torch.nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.out = torch.nn.Linear(dim, classes)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.out(pooled)


def fit(probe: torch.nn.Module, states, mask, labels, steps: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(probe.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(labels), (256,), generator=gen)
        loss = torch.nn.functional.cross_entropy(probe(states[idx], mask[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=3000, help="one-object train captions")
    ap.add_argument("--heldout", type=int, default=1000, help="one-object public-heldout captions")
    ap.add_argument("--steps", type=int, default=400, help="Adam steps per probe")
    args = ap.parse_args()
    encoder, tokenizer = load_minilm()
    text = TextEncoder(encoder, tokenizer, max_length=MINILM_MAX_LENGTH, cache_size=10**6)
    held = one_object_captions("public-heldout", args.heldout)
    for train_words in (False, True):
        train = one_object_captions("train", args.train, train_words)
        print("\n## training captions: " + ("worded with `world.TRAIN_ONLY_WORDS` as well" if train_words
                                             else "the seen words only"))
        probe_table(text, train, held, args.steps)


def probe_table(text: TextEncoder, train, held, steps: int) -> None:
    def encode(items):
        states = torch.cat([text.encode([c for c, _ in items[i:i + 256]]) for i in range(0, len(items), 256)])
        return states, states.abs().sum(-1) > 0

    train_states, train_mask = encode(train)
    held_states, held_mask = encode(held)
    print(f"{len(train)} one-object train captions, {len(held)} one-object public-heldout captions; "
          f"accuracy on public-heldout (chance: colour 1/8, shape 1/3, motion 1/8)")
    print("| aspect | probe | seen word | held-out word | all |")
    print("|---|---|---|---|---|")
    probes = {"pooled": lambda k: PooledProbe(text.dim, k), "attention": lambda k: AttentionProbe(text.dim, k),
              "attention+mlp": lambda k: AttentionProbe(text.dim, k, hidden=256)}
    best: dict[str, torch.Tensor] = {}  # aspect -> per-caption correctness of its best probe
    for aspect, (classes, words) in ASPECTS.items():
        y_train = torch.tensor([classes.index(getattr(o, aspect)) for _, o in train])
        y_held = torch.tensor([classes.index(getattr(o, aspect)) for _, o in held])
        unseen = torch.tensor([uses_heldout_word(c, words[getattr(o, aspect)]) for c, o in held])
        for name, make in probes.items():
            probe = fit(make(len(classes)), train_states, train_mask, y_train, steps, seed=0)
            with torch.no_grad():
                right = (probe(held_states, held_mask).argmax(-1) == y_held).float()
            if aspect not in best or right.mean() > best[aspect].mean():
                best[aspect] = right
            print(f"| {aspect} | {name} | {right[~unseen].mean():.1%} (n={int((~unseen).sum())}) | "
                  f"{right[unseen].mean():.1%} (n={int(unseen.sum())}) | {right.mean():.1%} |")
    colour = best["colour"]
    ceiling = (colour + colour * best["shape"] + colour * best["motion"] + 1) / 4
    print(f"\nsemantic ceiling, one-object public-heldout clips rendered as the best probes read them: "
          f"{ceiling.mean():.1%} (colour {colour.mean():.1%}, shape {(colour * best['shape']).mean():.1%}, "
          f"motion {(colour * best['motion']).mean():.1%}, count 100%)")


if __name__ == "__main__":
    main()
