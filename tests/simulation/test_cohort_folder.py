"""`simulate --cohort-dir`: which folders get a synthetic cohort, which are only read, which are refused, and
what `--sites` means for each; nothing is written before the answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedfusion.cli import main
from fedfusion.data.cohort_index import GENERATING_MARKER, cohort_oracle, find_sites
from fedfusion.data.synthetic import generate_cohort
from fedfusion.errors import ConfigError
from fedfusion.simulation.cohort_folder import SiteChoice, plan_cohort


def _real_cohort(root: Path, sites: list[str], *, schema: bool = True) -> Path:
    """A real-looking cohort folder: site folders with a clinical.csv, a study schema, no cohort.json."""
    for name in sites:
        (root / name).mkdir(parents=True)
        (root / name / "clinical.csv").write_text("patient_id,age\n")
    if schema:
        (root / "study.toml").write_text("[study]\n")
    (root / "notes.txt").write_text("the consortium's own notes\n")
    (root / ".hidden-site").mkdir()
    (root / ".hidden-site" / "clinical.csv").write_text("patient_id\n")
    (root / "docs").mkdir()  # a sub-folder without clinical.csv is not a site
    return root


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir()], ids=["missing", "empty"])
def test_a_missing_or_empty_folder_gets_a_synthetic_cohort(tmp_path: Path, make) -> None:
    folder = tmp_path / "new"
    make(folder)
    assert plan_cohort(folder, SiteChoice()).generate == 3
    assert plan_cohort(folder, SiteChoice.parse("5")).generate == 5
    with pytest.raises(ConfigError, match="names sites of an existing cohort"):
        plan_cohort(folder, SiteChoice.parse("site-a,site-b"))


def test_an_interrupted_generation_is_generated_again(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / GENERATING_MARKER).write_text("")
    (tmp_path / "half" / "study.toml").write_text("")
    assert plan_cohort(tmp_path / "half", SiteChoice()).generate == 3


def test_a_folder_with_site_data_is_used_as_it_is_every_site_sorted(tmp_path: Path) -> None:
    root = _real_cohort(tmp_path / "real", ["zeta", "alpha", "mid"])
    plan = plan_cohort(root, SiteChoice())
    assert plan.generate is None and [s.name for s in plan.sites] == ["alpha", "mid", "zeta"]
    assert plan.available == 3
    subset = plan_cohort(root, SiteChoice.parse("zeta,alpha"))
    assert [s.name for s in subset.sites] == ["alpha", "zeta"]
    assert [s.name for s in plan_cohort(root, SiteChoice.parse("3")).sites] == ["alpha", "mid", "zeta"]
    assert cohort_oracle(root) is None


def test_a_number_for_an_existing_cohort_of_another_size_is_refused_with_names(tmp_path: Path) -> None:
    root = _real_cohort(tmp_path / "real", ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"has 3 sites \(a, b, c\); --sites 2 does not say which: name them, "
                                          r"e\.g\. --sites a,b"):
        plan_cohort(root, SiteChoice.parse("2"))
    with pytest.raises(ConfigError, match=r"has no site \['d'\] \(its sites: a, b, c\)"):
        plan_cohort(root, SiteChoice.parse("a,d"))


def test_a_non_empty_folder_without_site_data_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "mine"
    (folder / "photos").mkdir(parents=True)
    (folder / "thesis.docx").write_bytes(b"precious")
    before = _files(folder)
    with pytest.raises(ConfigError, match=f"--cohort-dir {folder} is not empty and holds no site data"):
        plan_cohort(folder, SiteChoice())
    assert main(["simulate", "--cohort-dir", str(folder), "--results-dir", str(tmp_path / "results")]) == 2
    assert f"{folder} is not empty and holds no site data" in capsys.readouterr().err
    assert _files(folder) == before and sorted(p.name for p in folder.iterdir()) == ["photos", "thesis.docx"]
    assert not (tmp_path / "results").exists()


def test_the_generator_refuses_a_folder_that_is_not_its_own(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="not empty and holds no synthetic cohort"):
        generate_cohort(tmp_path / "mine", num_sites=2, patients_per_site=[3, 3], slide_size_px=256)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.docx"]


def test_a_generated_cohort_is_an_existing_cohort_with_its_oracle(small_cohort: Path) -> None:
    assert not (small_cohort / GENERATING_MARKER).exists()
    plan = plan_cohort(small_cohort, SiteChoice())
    assert plan.generate is None and [s.name for s in plan.sites] == [s.name for s in find_sites(small_cohort)]
    assert cohort_oracle(small_cohort) == small_cohort / "oracle.csv"



def test_a_real_cohort_without_a_study_schema_is_refused_naming_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _real_cohort(tmp_path / "real", ["a", "b"], schema=False)
    before = _files(root)
    assert main(["simulate", "--cohort-dir", str(root), "--results-dir", str(tmp_path / "results")]) == 2
    error = capsys.readouterr().err
    assert f"cohort {root} has no study.toml" in error and "--schema FILE" in error
    assert _files(root) == before and not (tmp_path / "results").exists()


@pytest.mark.parametrize(("text", "expected"), [(None, SiteChoice()), ("4", SiteChoice(count=4)),
                                                ("a, b", SiteChoice(names=("a", "b")))])
def test_sites_option_parses_a_number_or_names(text: str | None, expected: SiteChoice) -> None:
    assert SiteChoice.parse(text) == expected


@pytest.mark.parametrize("text", ["0", "a,a"])
def test_sites_option_refuses_zero_and_repeated_names(text: str) -> None:
    with pytest.raises(ConfigError):
        SiteChoice.parse(text)
