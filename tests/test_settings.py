"""One settings table per job (engine/settings.py): the tune's and the distillation's config
classes declare each setting once; the CLI flags and the Tune tab are made from them."""

import argparse
import dataclasses

import pytest

from engine import settings
from engine.cli import parser
from engine.distill.config import DistillConfig
from engine.tune.config import TuneConfig


@pytest.mark.parametrize("cls", [TuneConfig, DistillConfig])
def test_every_setting_has_help_and_a_default_that_fits_its_own_range(cls):
    table = settings.specs(cls)
    assert [f.name for f in dataclasses.fields(cls)] == list(table)
    for s in table.values():
        assert s.help, s.name
        if s.choices:
            assert s.default in s.choices, s.name
    cls()  # the defaults pass the table's ranges


@pytest.mark.parametrize("command, cls", [("tune", TuneConfig), ("distill", DistillConfig)])
def test_the_commands_flags_come_from_the_table_with_its_help_and_defaults(command, cls):
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {a.dest: a for a in sub._actions}
    for s in settings.specs(cls).values():
        if s.flag:
            action = flags[s.name]
            assert action.default is None and action.help.startswith(s.help), s.name  # nothing retyped
            shown = ",".join(map(str, s.default)) if isinstance(s.default, list) else s.default
            assert action.help.endswith(f"(default {'none' if shown is None else shown})"), action.help
    args = parser().parse_args([command, "--steps", "7", *(["--reward", "contrast", "--out", "x"] if command == "tune"
                                                          else []), "--student-steps", "2"])
    assert settings.from_flags(args, cls) == {"steps": 7, "student_steps": 2}


def test_out_of_range_values_are_named_and_lists_parse_from_commas():
    with pytest.raises(ValueError, match=r"student_steps must be in \[1, 8\], got 9"):
        TuneConfig(student_steps=9)
    with pytest.raises(ValueError, match=r"vsd_max_level must be in \[0, 1\], got 1.5"):
        DistillConfig(vsd_max_level=1.5)
    args = parser().parse_args(["distill", "--timesteps", "1000,757,522"])
    assert settings.from_flags(args, DistillConfig) == {"timesteps": [1000, 757, 522]}
    with pytest.raises(SystemExit):
        parser().parse_args(["distill", "--timesteps", "1000,abc"])


def test_the_tune_tab_takes_its_fields_from_the_table(monkeypatch):
    pytest.importorskip("gradio")
    import gradio as gr

    from studio import tune

    made = []
    real = gr.Slider.__init__

    def record(self, *a, **kw):
        made.append((kw.get("label"), a, kw))
        real(self, *a, **kw)

    monkeypatch.setattr(gr.Slider, "__init__", record)

    class FakeSession:
        class store:
            @staticmethod
            def adapters(limit):
                return []

    with gr.Blocks():
        tune.render(FakeSession(), "toyworld", gr.Dropdown())
    steps = next(kw for label, a, kw in made if label == "Steps")
    assert steps["value"] == TuneConfig().steps and steps["info"].startswith(settings.spec(TuneConfig, "steps").help)
