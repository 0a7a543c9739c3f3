"""The command line: inspect's JSON, help for every command, clear errors."""

from __future__ import annotations

import json

import pytest

from covid_tf.cli import COMMANDS, build_parser, main
from tests.helpers import make_class_folders


def test_every_command_module_builds_its_parser():
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0


def test_inspect_json_has_the_documented_keys(tmp_path, capsys):
    make_class_folders(tmp_path, {"COVID": 3, "Normal": 2})
    (tmp_path / "COVID" / "broken.png").write_bytes(b"\x89PNG")
    (tmp_path / "Normal" / "copy.png").write_bytes((tmp_path / "COVID" / "img_0.png").read_bytes())
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == {"COVID": 3, "Normal": 3}
    assert [s["path"].endswith("broken.png") for s in summary["skipped"]] == [True]
    assert len(summary["duplicates"]) == 1 and len(summary["duplicates"][0]) == 2
    assert main(["inspect", str(tmp_path), "--strict"]) == 1


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "absent" in err[0]


@pytest.mark.realdata
def test_inspect_real_radiography_subset(radiography_dir, capsys):
    assert main(["inspect", str(radiography_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == {"COVID": 1000, "Normal": 1000, "Viral Pneumonia": 400}
    assert summary["duplicates"] and summary["skipped"] == []
