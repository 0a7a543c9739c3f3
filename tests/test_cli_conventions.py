"""One command-line convention: every option says its default, a flag means the same in every command."""

from __future__ import annotations

import argparse
import io
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from covid_tf import cli

# Flags that still mean different things in different commands (none left: --split is fractions, --subset a
# split name, --model an architecture, --segmenter a segmenter file).
NOT_YET_ONE_MEANING: dict[str, str] = {}


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options a user sees (not --help, not hidden deprecated aliases)."""
    return [action for action in parser._actions if action.option_strings
            and not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS]


def test_every_option_of_every_command_says_its_default() -> None:
    missing = []
    for name, parser in commands().items():
        text = parser.format_help()
        for action in options(parser):
            shown = cli.help_with_default(action)
            if not action.help or not ("default" in shown.lower() or "required" in shown):
                missing.append(f"{name} {action.option_strings[-1]}: {action.help!r}")
            elif "%(default)s" in shown:  # argparse fills it in: the value is on the page
                assert str(action.default) in text, (name, action.option_strings)
    assert missing == []


def test_a_flag_means_the_same_in_every_command() -> None:
    meanings: dict[str, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, parser in commands().items():
        for action in options(parser):
            # argparse's own action class: train's store action only also records that an option was given
            kind = next(cls.__name__ for cls in type(action).__mro__ if cls.__module__ == "argparse")
            meaning = (kind, getattr(action.type, "__name__", action.type),
                       tuple(action.choices) if action.choices else None)
            meanings[action.option_strings[-1]][meaning].append(name)
    differing = {flag: dict(found) for flag, found in meanings.items() if len(found) > 1}
    assert set(differing) == set(NOT_YET_ONE_MEANING), differing
    assert all("--quiet" in {a.option_strings[-1] for a in options(parser)} for parser in commands().values())


def test_explain_heat_threshold_keeps_the_old_name_working() -> None:
    parser = cli.build_parser("explain")
    base = ["explain", "model.keras", "images", "--out", "out"]
    assert parser.parse_args(base).heat_threshold == 0.85
    assert parser.parse_args([*base, "--heat-threshold", "0.5"]).heat_threshold == 0.5
    assert parser.parse_args([*base, "--threshold", "0.6"]).heat_threshold == 0.6
    assert "--threshold" not in commands()["explain"].format_help()


@pytest.mark.parametrize(("argv0", "expected"), [("/usr/bin/covid-tf", "usage: covid-tf"),
                                                 ("/x/covid_tf/__main__.py", "usage: python -m covid_tf")])
def test_usage_names_the_program_as_it_was_run(monkeypatch, argv0: str, expected: str) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    assert cli.build_parser("report").format_usage().startswith(expected)


@pytest.mark.parametrize("command", ["synth", "synth-ct", "dicom2png"])
def test_out_is_an_option_and_the_old_positional_a_deprecated_alias(command, capsys) -> None:
    inputs = ["dicom_dir"] if command == "dicom2png" else []
    parser = cli.build_parser(command)
    args = parser.parse_args([command, *inputs, "--out", "new"])
    cli.resolve_out(args)
    assert args.out == Path("new") and capsys.readouterr().err == ""
    args = parser.parse_args([command, *inputs, "old"])
    cli.resolve_out(args)
    assert args.out == Path("old")
    assert capsys.readouterr().err.count("deprecated, use --out old") == 1
    args = parser.parse_args([command, *inputs, "same", "--out", "same"])
    cli.resolve_out(args)
    assert args.out == Path("same")
    assert "OUT" not in commands()[command].format_usage().replace("--out OUT", "")


def test_out_and_a_different_positional_out_are_refused(tmp_path, capsys) -> None:
    assert cli.main(["synth", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "differ: give --out only" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert cli.main(["dicom2png", str(tmp_path)]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_synth_defaults_its_out_folder() -> None:
    args = cli.build_parser("synth").parse_args(["synth"])
    cli.resolve_out(args)
    assert args.out == Path(str(cli.importlib.import_module("covid_tf.config").SYNTHETIC_DIR))


@pytest.mark.parametrize(("argv", "hint"), [
    (["evaluate", "m.keras", "data", "--out", "o", "--split", "test"], "--subset NAME"),
    (["report", "run", "--out", "r.html", "--split", "val"], "--subset test|val"),
    (["segment", "x.png", "--out", "o", "--model", "seg.keras"], "--segmenter FILE"),
])
def test_old_option_names_are_refused_with_a_hint_at_the_new_one(argv, hint, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser(argv[0]).parse_args(argv)
    assert exit_.value.code == 2
    assert hint in capsys.readouterr().err
    assert argv[-2] not in commands()[argv[0]].format_help().replace("--split-file", "")


def test_subset_and_segmenter_parse() -> None:
    evaluate = ["evaluate", "m", "d", "--out", "o", "--subset", "val"]
    assert cli.build_parser("evaluate").parse_args(evaluate).subset == "val"
    assert cli.build_parser("report").parse_args(["report", "r", "--out", "o"]).subset == "test"
    args = cli.build_parser("segment").parse_args(["segment", "x.png", "--out", "o", "--segmenter", "s.keras"])
    assert args.segmenter == Path("s.keras")


def test_report_refuses_a_subset_it_does_not_hold(tmp_path, capsys) -> None:
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "r.html"), "--subset", "train"]) == 2
    assert "--subset: test or val" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_show_on_a_terminal_only_and_not_with_quiet(monkeypatch, tmp_path) -> None:
    from covid_tf import io_utils

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert io_utils.progress_bar(range(3)).disable  # not a terminal
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert not io_utils.progress_bar(range(3)).disable
    argv = ["synth", "--out", str(tmp_path / "s"), "--per-class", "1", "--size", "32"]
    assert cli.main([*argv, "--quiet"]) == 0
    assert not io_utils.progress_shown() and io_utils.progress_bar(range(3)).disable
    assert cli.main([*argv, "--overwrite"]) == 0
    assert io_utils.progress_shown()


def test_a_dataset_scan_draws_its_bar_on_a_terminal(monkeypatch, tmp_path) -> None:
    from covid_tf.data import discover
    from covid_tf.synthetic import xray

    xray.generate_dataset(tmp_path / "d", classes=["COVID", "Normal"], per_class=2, size=32)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    discover.discover(tmp_path / "d")
    assert "scanning images" in terminal.getvalue()


def test_library_messages_go_through_the_covid_tf_logger_to_stderr(capsys) -> None:
    import logging

    from covid_tf.workflows import train as run

    cli.configure_logging(quiet=False)
    cli.configure_logging(quiet=False)  # one handler, however often
    run._warn("stale file removed")
    logging.getLogger("covid_tf.x").info("an info line")
    err = capsys.readouterr().err
    assert err == "warning: stale file removed\nan info line\n"
    cli.configure_logging(quiet=True)
    logging.getLogger("covid_tf.x").info("hidden")
    run._warn("still shown")
    assert capsys.readouterr().err == "warning: still shown\n"
    cli.configure_logging(quiet=False)
