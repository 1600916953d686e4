"""`fedfusion example-cohort gbsg2` and `fedfusion partition` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fedfusion.cli import main
from fedfusion.study.schema import load_schema


@pytest.fixture(scope="module")
def gbsg2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gbsg2") / "pooled"
    assert main(["example-cohort", "gbsg2", "--out", str(out)]) == 0
    return out


def test_gbsg2_partitioned_into_four_stratified_sites(gbsg2: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sites"
    assert main(["partition", str(gbsg2), "--out", str(out), "--random", "4", "--stratify", "cens",
                 "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "partition.json").read_text())
    assert [s["name"] for s in record["sites"]] == ["site-1", "site-2", "site-3", "site-4"]
    assert sum(s["patients"] for s in record["sites"]) == 686
    assert record["mode"] == "random" and record["seed"] == 0 and record["arguments"]["stratify"] == "cens"
    events = [s["events"]["recurrence-free survival"] for s in record["sites"]]
    assert sum(events) == 299 and max(events) - min(events) <= 1
    sites = [pd.read_csv(out / f"site-{i}" / "clinical.csv") for i in range(1, 5)]
    assert sorted(pd.concat(sites).patient_id) == sorted(pd.read_csv(gbsg2 / "clinical.csv").patient_id)
    assert all(list(site.columns) == list(sites[0].columns) for site in sites)
    assert load_schema(out / "study.toml").split_column == "split"
    assert "site-1: 172 patients, 75 events (recurrence-free survival)" in printed
    assert f"report: {out / 'partition.json'}" in printed


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--by-column", "tgrade", "--seed", "1"], "--seed, --stratify and --sizes go with --random only"),
        (["--by-pattern", "GBSG2-(\\d)"], "--by-pattern needs --mapping FILE"),
        (["--by-column", "tgrade", "--mapping", "m.csv"], "--mapping and --unmapped go with --by-pattern only"),
        (["--by-column", "hospital"], "no column 'hospital' (the partition column)"),
        (["--random", "4", "--sizes", "1,1"], "--sizes must give 4 positive proportions"),
    ],
)
def test_bad_partition_options_exit_2_and_write_nothing(gbsg2: Path, tmp_path: Path, extra: list[str],
                                                        fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sites"
    assert main(["partition", str(gbsg2), "--out", str(out), *extra]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_by_column_with_a_small_site_to_external_test(gbsg2: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sites"
    assert main(["partition", str(gbsg2), "--out", str(out), "--by-column", "tgrade", "--min-patients", "100"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["II", "III", "external-test", "partition.json", "study.toml"]
    assert "external-test: 81 patients" in printed and "from small sites ['I']" in printed
    assert "note: site I: 81 patients, fewer than 100: to external-test/" in printed


def test_non_empty_out_is_refused_naming_it(gbsg2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sites"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["partition", str(gbsg2), "--out", str(out), "--random", "2"]) == 2
    assert f"output folder {out} is not empty (holds ['keep.txt'])" in capsys.readouterr().err
    assert main(["example-cohort", "gbsg2", "--out", str(out)]) == 2
    assert f"output folder {out} is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_partition_and_example_cohort_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "partition" in printed and "example-cohort" in printed
