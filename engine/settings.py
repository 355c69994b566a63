"""One settings table per job: a job's config dataclass declares each setting once, with its
default, its help, its range and whether the command line offers it, and the rest is made from
it: the config's defaults, the CLI flags with their help (`add_flags`, `from_flags`), and the
studio's fields (`spec`: the Tune tab's sliders take their range, default and help from here).
Generation's knobs are the same idea for requests (engine/knobs.py).

    steps: int = setting(300, "generator (LoRA) updates", low=1, high=100_000, flag=True)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass


@dataclass(frozen=True)
class Spec:
    """What the table says of one setting (its type as declared, e.g. int, float, list[str])."""
    name: str
    type: object
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    flag: bool = False


def setting(default=MISSING, help: str = "", *, factory=MISSING, low: float | None = None,
            high: float | None = None, choices: tuple | None = None, flag: bool = False):
    """A dataclass field carrying its help, range, choices and whether `rushes` offers it as a flag."""
    meta = {"help": help, "low": low, "high": high, "choices": choices, "flag": flag}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def specs(cls) -> dict[str, Spec]:
    """Every setting of a config class, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()
        m = f.metadata
        out[f.name] = Spec(f.name, hints[f.name], default, m.get("help", ""), m.get("low"), m.get("high"),
                           m.get("choices"), m.get("flag", False))
    return out


def spec(cls, name: str) -> Spec:
    return specs(cls)[name]


def _plain(kind):
    """X for `X | None`; the type itself otherwise."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return inner[0] if len(inner) == 1 else kind
    return kind


def _parser_for(kind, name: str):
    kind = _plain(kind)
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]

        def parse(text: str):
            try:
                return [item(t.strip()) for t in text.split(",") if t.strip()]
            except ValueError:
                raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: expected comma-separated "
                                                 f"{item.__name__}s, got {text!r}") from None
        return parse
    return kind


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def add_flags(parser: argparse.ArgumentParser, cls, defaults: dict | None = None) -> None:
    """A `--name` flag for each setting of `cls` marked `flag`, its help ending in its default
    (`defaults` overrides what is shown, for a command whose defaults differ); every flag's default
    is None, so `from_flags` can tell what was given."""
    for s in specs(cls).values():
        if not s.flag:
            continue
        flag = "--" + s.name.replace("_", "-")
        shown = _shown((defaults or {}).get(s.name, s.default))
        text = f"{s.help} (default {shown})"
        if _plain(s.type) is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        kwargs = {"type": _parser_for(s.type, s.name), "default": None, "help": text}
        if s.choices:
            kwargs["choices"] = s.choices
        elif s.low is not None and _plain(s.type) is int and s.high is not None and s.high - s.low <= 16:
            kwargs["choices"], kwargs["metavar"] = range(int(s.low), int(s.high) + 1), f"{int(s.low)}..{int(s.high)}"
        parser.add_argument(flag, **kwargs)


def from_flags(args: argparse.Namespace, cls) -> dict:
    """The settings of `cls` the command line gave (flags left out are absent)."""
    return {s.name: getattr(args, s.name) for s in specs(cls).values()
            if s.flag and getattr(args, s.name, None) is not None}


def check_ranges(config) -> None:
    """ValueError naming each setting outside its declared range (None is always allowed)."""
    for s in specs(type(config)).values():
        value = getattr(config, s.name)
        if value is None or isinstance(value, (bool, list, str)):
            continue
        if (s.low is not None and value < s.low) or (s.high is not None and value > s.high):
            low = "-inf" if s.low is None else f"{s.low:g}"
            high = "inf" if s.high is None else f"{s.high:g}"
            raise ValueError(f"{s.name} must be in [{low}, {high}], got {value!r}")
