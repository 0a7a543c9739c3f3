"""Training only on the slices a CSV marks infected (seed 002's radiologist labels): covid_tf.ct.infected."""

from __future__ import annotations

import pandas as pd
import pytest

from covid_tf.cli import build_parser
from covid_tf.cli.commands.train import config_from_args
from covid_tf.ct.infected import keep_infected_training_slices, read_infected_slices
from covid_tf.errors import CovidTfError
from covid_tf.runs.config import TrainConfig
from covid_tf.training.fit import make_datasets


def _split(folder):
    rows = [(f"covid_{i}.png", "COVID", split) for i, split in enumerate(["train"] * 4 + ["val", "test"])]
    rows += [(f"normal_{i}.png", "Normal", split) for i, split in enumerate(["train"] * 4 + ["val", "test"])]
    return pd.DataFrame([(str(folder / path), label, split) for path, label, split in rows],
                        columns=["path", "label", "split"])


def test_training_drops_the_slices_marked_not_infected_and_keeps_the_rest(tmp_path):
    split = _split(tmp_path)
    marks_file = tmp_path / "marks.csv"  # relative paths: to the CSV's folder
    pd.DataFrame({"path": ["covid_0.png", "covid_1.png", "covid_2.png", "covid_4.png"],
                  "infected": ["1", "0", "no", "0"]}).to_csv(marks_file, index=False)
    marks = read_infected_slices(marks_file)
    kept = keep_infected_training_slices(split, marks)
    dropped = set(split["path"]) - set(kept["path"])
    assert dropped == {str(tmp_path / "covid_1.png"), str(tmp_path / "covid_2.png")}  # training rows marked 0
    assert str(tmp_path / "covid_4.png") in set(kept["path"])  # a validation slice stays, marked or not
    assert (kept["label"] == "Normal").sum() == 6  # not listed: kept
    everything = {row: False for row in split.loc[split["label"] == "COVID", "path"]}
    with pytest.raises(CovidTfError, match="every training slice of COVID"):
        keep_infected_training_slices(split, everything)


@pytest.mark.parametrize(("text", "message"), [("path,label\na.png,1\n", "lacks column"),
                                                ("path,infected\na.png,maybe\n", "must be 1 or 0.*row 2")])
def test_a_bad_marks_csv_is_refused_with_its_name_and_reason(tmp_path, text, message):
    path = tmp_path / "marks.csv"
    path.write_text(text)
    with pytest.raises(CovidTfError, match=message) as error:
        read_infected_slices(path)
    assert str(path) in str(error.value)


def test_train_option_reaches_the_training_dataset(tmp_path):
    marks_file = tmp_path / "marks.csv"
    pd.DataFrame({"path": ["covid_0.png"], "infected": [0]}).to_csv(marks_file, index=False)
    args = build_parser("train").parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"),
                                             "--infected-slices", str(marks_file)])
    cfg = config_from_args(args)
    assert cfg.infected_slices == str(marks_file.resolve())
    *_, parts = make_datasets(cfg, _split(tmp_path), ["COVID", "Normal"], None)
    assert len(parts["train"][0]) == 7 and str(tmp_path / "covid_0.png") not in parts["train"][0]
    assert len(parts["val"][0]) == 2
    with pytest.raises(CovidTfError, match="not found"):
        TrainConfig(data=str(tmp_path), infected_slices=str(tmp_path / "missing.csv"))
