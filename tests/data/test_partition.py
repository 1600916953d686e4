"""fedfusion partition: a pooled cohort folder into site folders, read-only on the pooled side."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfusion.data.partition import REPORT_FILE, partition_cohort
from fedfusion.data.partition_rules import ByColumn, ByPattern, RandomSplit, assign_sites, sanitise_site_name
from fedfusion.errors import ConfigError, DataError
from fedfusion.study.schema import load_schema

GENES = [f"G{i}" for i in range(1, 7)]
SCHEMA = """
[study]
modalities = ["wsi", "omics", "clinical"]

[[covariates]]
name = "age"
type = "numeric"
center = 60.0
scale = 10.0

[[tasks]]
name = "os"
type = "survival"
time = "months"
unit = "months"
event = "event"
time-bins = [12, 24]

[[omics]]
name = "expression"
units = "tpm"
panel = "panels/genes.txt"
sample-column = "omics_sample"
file = "expression_tpm"

[[omics]]
name = "copy-number"
units = "log2-ratio"
genes = ["G1", "G2", "G3"]
sample-column = "cnv_sample"
file = "copy_number"

[[omics]]
name = "methylation"
units = "normalized"
genes = ["G4", "G5"]
sample-column = "meth_sample"
file = "methylation"
"""
# (code, institution, patients): A1 and B2 are sites, C3 is below the default minimum of 20
HOSPITALS = (("A1", "St. Mary's", 30), ("B2", "General Hospital", 22), ("C3", "Tiny Clinic", 8))


def build_pooled(root: Path, slides_outside: Path) -> Path:
    """A pooled cohort: 60 patients, three omics tables (TSV.gz, Parquet, CSV), slides inside and outside."""
    rng = np.random.default_rng(7)
    (root / "panels").mkdir(parents=True)
    (root / "panels" / "genes.txt").write_text("\n".join(GENES) + "\n")
    (root / "study.toml").write_text(SCHEMA)
    clinical, manifest = [], []
    slides_outside.mkdir(parents=True, exist_ok=True)
    (root / "slides").mkdir()
    i = 0
    for code, institution, count in HOSPITALS:
        for _ in range(count):
            i += 1
            pid = f"TCGA-{code}-{i:04d}"
            clinical.append({"patient_id": pid, "age": str(40 + i % 30), "months": f"{1.5 + i:.1f}",
                             "event": "1" if i % 3 == 0 else "0", "institution": institution,
                             "subtype": ["basal", "luminal", ""][i % 3]})
            if i % 10 == 0:
                continue  # a patient without manifest row: kept, no slides, no omics
            inside = root / "slides" / f"{pid}.svs"
            inside.write_bytes(pid.encode())
            outside = slides_outside / f"{pid}-B.ndpi"
            outside.write_bytes(pid.encode() + b"B")
            slides = f"slides/{pid}.svs;{os.path.relpath(outside, root)}" if i % 4 else str(outside)
            manifest.append({"patient_id": pid, "slides": slides, "omics_sample": f"RNA-{i}" if i % 5 else "",
                             "cnv_sample": f"CNV-{i}", "meth_sample": f"METH-{i}" if code == "A1" else ""})
    pd.DataFrame(clinical).to_csv(root / "clinical.csv", index=False)
    pd.DataFrame(manifest).to_csv(root / "manifest.csv", index=False)
    rna = [m["omics_sample"] for m in manifest if m["omics_sample"]] + ["RNA-UNUSED"]
    expression = pd.DataFrame(rng.gamma(2.0, 10.0, (len(GENES), len(rna))).round(3), index=GENES, columns=rna)
    expression.index.name = "gene_id"
    expression.to_csv(root / "expression_tpm.tsv.gz", sep="\t")
    cnv = pd.DataFrame(rng.normal(0, 0.5, (3, len(manifest))), columns=[m["cnv_sample"] for m in manifest])
    cnv.insert(0, "gene_id", ["G1", "G2", "G3"])
    cnv.to_parquet(root / "copy_number.parquet")  # gene ids as the first column, no stored index
    meth = [m["meth_sample"] for m in manifest if m["meth_sample"]]
    pd.DataFrame(rng.uniform(0, 1, (2, len(meth))).round(4), index=["G4", "G5"], columns=meth).rename_axis(
        "gene_id").to_csv(root / "methylation.csv")
    return root


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pooled(tmp_path: Path) -> Path:
    return build_pooled(tmp_path / "pooled", tmp_path / "archive" / "slides")


def site_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_by_column_sanitised_sites_and_small_site_to_external_test(pooled: Path, tmp_path: Path) -> None:
    before = hashes(pooled)
    out = tmp_path / "sites"
    report = partition_cohort(pooled, out, ByColumn("institution"))
    assert site_dirs(out) == ["General_Hospital", "St_Mary_s", "external-test", "panels"]
    assert [s.name for s in report.sites] == ["General_Hospital", "St_Mary_s"]
    pooled_clinical = pd.read_csv(pooled / "clinical.csv", dtype=str, keep_default_na=False)
    for site, institution in (("St_Mary_s", "St. Mary's"), ("General_Hospital", "General Hospital"),
                              ("external-test", "Tiny Clinic")):
        clinical = pd.read_csv(out / site / "clinical.csv", dtype=str, keep_default_na=False)
        expected = pooled_clinical[pooled_clinical.institution == institution].reset_index(drop=True)
        pd.testing.assert_frame_equal(clinical, expected)  # its rows only, same columns, same text
    record = json.loads((out / REPORT_FILE).read_text())
    assert record["mode"] == "by-column" and record["arguments"]["column"] == "institution"
    assert [(s["name"], s["patients"]) for s in record["sites"]] == [("General_Hospital", 22), ("St_Mary_s", 30)]
    events = {s["name"]: s["events"]["os"] for s in record["sites"]}
    assert events == {"St_Mary_s": 10, "General_Hospital": 7}  # every third patient id number has an event
    assert record["external_test"] == {"name": "external-test", "patients": 8, "events": {"os": 3},
                                       "from_sites": ["Tiny_Clinic"]}
    assert record["pooled"]["clinical_sha256"] == hashlib.sha256((pooled / "clinical.csv").read_bytes()).hexdigest()
    assert any("Tiny_Clinic: 8 patients, fewer than 20: to external-test/" in n for n in report.notes)
    assert load_schema(out / "study.toml").to_json() == load_schema(pooled / "study.toml").to_json()
    assert hashes(pooled) == before


def test_small_sites_dropped(pooled: Path, tmp_path: Path) -> None:
    report = partition_cohort(pooled, tmp_path / "out", ByColumn("institution"), small_sites="drop")
    assert site_dirs(tmp_path / "out") == ["General_Hospital", "St_Mary_s", "panels"]
    record = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert record["external_test"] is None
    assert record["small_sites_dropped"][0]["name"] == "Tiny_Clinic"
    assert record["dropped_patients"] == {"unmapped": 0, "small_sites": 8, "total": 8}
    assert any("Tiny_Clinic: 8 patients, fewer than 20: dropped" in n for n in report.notes)


def test_min_patients_lowered_keeps_the_small_site(pooled: Path, tmp_path: Path) -> None:
    report = partition_cohort(pooled, tmp_path / "out", ByColumn("institution"), min_patients=5)
    assert [s.name for s in report.sites] == ["General_Hospital", "St_Mary_s", "Tiny_Clinic"]
    assert report.external_test is None


def test_by_pattern_with_mapping(pooled: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "tss.csv"
    mapping.write_text("code,site\nA1,alpha\nB2,beta\nC3,beta\n")  # two codes may share a site
    partition_cohort(pooled, tmp_path / "out", ByPattern(r"^TCGA-(\w\w)-", mapping))
    record = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert [(s["name"], s["patients"]) for s in record["sites"]] == [("alpha", 30), ("beta", 30)]
    beta = pd.read_csv(tmp_path / "out" / "beta" / "clinical.csv")
    assert set(beta.institution) == {"General Hospital", "Tiny Clinic"}


def test_unmapped_ids_are_an_error_naming_them_or_dropped(pooled: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "tss.csv"
    mapping.write_text("A1,alpha\nB2,beta\n")  # no header, no C3
    with pytest.raises(DataError) as error:
        partition_cohort(pooled, tmp_path / "out", ByPattern(r"^TCGA-(\w\w)-", mapping))
    message = str(error.value)
    assert "clinical.csv" in message and "TCGA-C3-0053 (code 'C3')" in message and "and 3 more" in message
    assert not (tmp_path / "out").exists()
    report = partition_cohort(pooled, tmp_path / "out", ByPattern(r"^TCGA-(\w\w)-", mapping, drop_unmapped=True),
                              min_patients=5)
    assert [s.name for s in report.sites] == ["alpha", "beta"] and report.rule_dropped == 8
    assert "dropped 8 unmapped patients" in report.notes[0]
    assert json.loads((tmp_path / "out" / REPORT_FILE).read_text())["dropped_patients"]["unmapped"] == 8


def test_ids_not_matching_the_pattern_are_named(pooled: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "tss.csv"
    mapping.write_text("A1,alpha\n")
    with pytest.raises(DataError, match=r"patients \['TCGA-A1-0001'.* do not match '\^XYZ-'"):
        partition_cohort(pooled, tmp_path / "out", ByPattern("^XYZ-", mapping))


def test_random_split_is_seeded_and_equal_sized(pooled: Path, tmp_path: Path) -> None:
    first = partition_cohort(pooled, tmp_path / "a", RandomSplit(3, seed=5), min_patients=1)
    again = partition_cohort(pooled, tmp_path / "b", RandomSplit(3, seed=5), min_patients=1)
    other = partition_cohort(pooled, tmp_path / "c", RandomSplit(3, seed=6), min_patients=1)
    assert [s.patients for s in first.sites] == [20, 20, 20]
    assert [s.name for s in first.sites] == ["site-1", "site-2", "site-3"]
    members = {d: {s: set(pd.read_csv(tmp_path / d / s / "clinical.csv").patient_id) for s in site_dirs(tmp_path / d)
                   if s != "panels"} for d in "abc"}
    assert members["a"] == members["b"] and members["a"] != members["c"]
    assert json.loads((tmp_path / "a" / REPORT_FILE).read_text())["seed"] == 5
    assert first.record["sites"] == again.record["sites"] and other.record["seed"] == 6


def test_stratified_random_split_balances_every_stratum() -> None:
    rng = np.random.default_rng(0)
    n = 1001
    clinical = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)],
                             "grade": rng.choice(["1", "2", "3", ""], n, p=[0.6, 0.25, 0.1, 0.05])})
    site_of = assign_sites(RandomSplit(4, seed=1, stratify="grade"), clinical, Path("clinical.csv")).site_of
    table = pd.crosstab(clinical.grade, clinical.patient_id.map(site_of))
    assert table.sum().max() - table.sum().min() <= 1  # sizes as equal as possible
    assert (table.max(axis=1) - table.min(axis=1)).max() <= 1  # each stratum (empty too) within one per site
    unstratified = assign_sites(RandomSplit(4, seed=1), clinical, Path("clinical.csv")).site_of
    loose = pd.crosstab(clinical.grade, clinical.patient_id.map(unstratified))
    assert (loose.max(axis=1) - loose.min(axis=1)).max() > 1  # without it, chance alone unbalances a stratum


def test_random_split_with_sizes() -> None:
    clinical = pd.DataFrame({"patient_id": [f"P{i}" for i in range(100)]})
    site_of = assign_sites(RandomSplit(3, seed=0, sizes=(0.5, 0.3, 0.2)), clinical, Path("clinical.csv")).site_of
    assert pd.Series(site_of).value_counts().to_dict() == {"site-1": 50, "site-2": 30, "site-3": 20}
    with pytest.raises(ConfigError, match="--sizes must give 3 positive proportions"):
        assign_sites(RandomSplit(3, seed=0, sizes=(0.5, 0.5)), clinical, Path("clinical.csv"))


def test_slide_paths_still_resolve_from_the_site_folder(pooled: Path, tmp_path: Path) -> None:
    out = tmp_path / "deeper" / "out"
    partition_cohort(pooled, out, ByColumn("institution"))
    pooled_manifest = pd.read_csv(pooled / "manifest.csv", dtype=str, keep_default_na=False).set_index("patient_id")
    checked = 0
    for site in ("St_Mary_s", "General_Hospital", "external-test"):
        manifest = pd.read_csv(out / site / "manifest.csv", dtype=str, keep_default_na=False)
        for pid, cell in zip(manifest.patient_id, manifest.slides, strict=True):
            originals = [pooled / p for p in pooled_manifest.loc[pid, "slides"].split(";")]
            rebased = [out / site / p for p in cell.split(";")]
            assert len(rebased) == len(originals)
            for new, old in zip(rebased, originals, strict=True):
                assert new.is_file() and os.path.samefile(new, old)
                checked += 1
        assert not (out / site / "slides").exists()  # slides are not copied
    assert checked == sum(len(cell.split(";")) for cell in pooled_manifest.slides) == 96


def test_omics_tables_restricted_to_the_site_samples_in_the_source_format(pooled: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = partition_cohort(pooled, out, ByColumn("institution"))
    expression = pd.read_csv(pooled / "expression_tpm.tsv.gz", sep="\t", index_col=0)
    cnv = pd.read_parquet(pooled / "copy_number.parquet")
    meth = pd.read_csv(pooled / "methylation.csv", index_col=0)
    for site in ("St_Mary_s", "General_Hospital", "external-test"):
        manifest = pd.read_csv(out / site / "manifest.csv", dtype=str, keep_default_na=False)
        gz = out / site / "expression_tpm.tsv.gz"
        with gzip.open(gz, "rt") as handle:  # really gzipped TSV
            table = pd.read_csv(io.StringIO(handle.read()), sep="\t", index_col=0)
        wanted = [s for s in manifest.omics_sample if s]
        assert sorted(table.columns) == sorted(wanted) and table.index.name == "gene_id"
        pd.testing.assert_frame_equal(table, expression[table.columns])
        site_cnv = pd.read_parquet(out / site / "copy_number.parquet")
        assert list(site_cnv.columns) == ["gene_id", *[s for s in cnv.columns if s in set(manifest.cnv_sample)]]
        pd.testing.assert_frame_equal(site_cnv, cnv[site_cnv.columns])
        meth_samples = [s for s in manifest.meth_sample if s]
        if site == "St_Mary_s":
            pd.testing.assert_frame_equal(pd.read_csv(out / site / "methylation.csv", index_col=0),
                                          meth[meth_samples])
        else:  # no sample of this layer at the site: no table (a table without samples is an error at a site)
            assert not meth_samples and not (out / site / "methylation.csv").exists()
    counts = {o["layer"]: o for o in report.record["omics"]}
    assert counts["expression"]["samples_in_pooled"] == counts["expression"]["samples_written"] + 1  # RNA-UNUSED


def test_schema_copy_carries_its_panel_file(pooled: Path, tmp_path: Path) -> None:
    partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    assert (tmp_path / "out" / "panels" / "genes.txt").read_bytes() == (pooled / "panels" / "genes.txt").read_bytes()
    assert (tmp_path / "out" / "study.toml").read_bytes() == (pooled / "study.toml").read_bytes()
    assert load_schema(tmp_path / "out" / "study.toml").omics[0].genes == tuple(GENES)


def test_pooled_folder_byte_identical_after_every_mode(pooled: Path, tmp_path: Path) -> None:
    before = hashes(pooled)
    mtimes = {p: p.stat().st_mtime_ns for p in pooled.rglob("*")}
    mapping = tmp_path / "map.csv"
    mapping.write_text("code,site\nA1,a\nB2,b\n")
    partition_cohort(pooled, tmp_path / "1", ByColumn("institution"))
    partition_cohort(pooled, tmp_path / "2", ByPattern(r"-(\w\d)-", mapping, drop_unmapped=True))
    partition_cohort(pooled, tmp_path / "3", RandomSplit(2, seed=0, stratify="event"))
    assert hashes(pooled) == before
    assert {p: p.stat().st_mtime_ns for p in pooled.rglob("*")} == mtimes  # nothing added, removed or touched


@pytest.mark.parametrize("existing", ["file", "hidden"])
def test_refuses_a_non_empty_output_folder(pooled: Path, tmp_path: Path, existing: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ("notes.txt" if existing == "file" else ".keep")).write_text("mine")
    before = hashes(out)
    with pytest.raises(ConfigError, match=f"output folder {out} is not empty"):
        partition_cohort(pooled, out, ByColumn("institution"))
    assert hashes(out) == before and len(list(out.iterdir())) == 1


def test_an_empty_output_folder_is_used(pooled: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    assert (tmp_path / "out" / REPORT_FILE).is_file()


def test_refuses_an_output_folder_inside_the_pooled_folder(pooled: Path) -> None:
    before = hashes(pooled)
    with pytest.raises(ConfigError, match="inside the pooled cohort"):
        partition_cohort(pooled, pooled / "sites", ByColumn("institution"))
    assert hashes(pooled) == before and not (pooled / "sites").exists()


def test_missing_partition_column_names_file_and_column(pooled: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"clinical table .*pooled/clinical.csv: no column 'hospital' \(the "
                                        r"partition column\)"):
        partition_cohort(pooled, tmp_path / "out", ByColumn("hospital"))
    with pytest.raises(DataError, match=r"no column 'grade' \(--stratify\)"):
        partition_cohort(pooled, tmp_path / "out", RandomSplit(2, seed=0, stratify="grade"))
    assert not (tmp_path / "out").exists()


def test_empty_partition_value_names_the_patient(pooled: Path, tmp_path: Path) -> None:
    clinical = pd.read_csv(pooled / "clinical.csv", dtype=str, keep_default_na=False)
    clinical.loc[4, "institution"] = " "
    clinical.to_csv(pooled / "clinical.csv", index=False)
    with pytest.raises(DataError, match=r"clinical.csv: column 'institution' is empty for patients \['TCGA-A1-0005'\]"):
        partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    assert not (tmp_path / "out").exists()


def test_manifest_sample_missing_from_its_table_is_named_before_writing(pooled: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(pooled / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest.patient_id == "TCGA-B2-0041", "cnv_sample"] = "CNV-GONE"
    manifest.to_csv(pooled / "manifest.csv", index=False)
    with pytest.raises(DataError, match=r"copy_number.parquet: no columns for samples \['CNV-GONE \(patient "
                                        r"TCGA-B2-0041\)'\] named in .*manifest.csv column 'cnv_sample'"):
        partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    assert not (tmp_path / "out").exists()


def test_manifest_patient_without_clinical_row_is_named(pooled: Path, tmp_path: Path) -> None:
    with (pooled / "manifest.csv").open("a") as handle:
        handle.write("STRANGER,,,CNV-1,\n")
    with pytest.raises(DataError, match=r"manifest .*: patients \['STRANGER'\] have no row in .*clinical.csv"):
        partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))


def test_colliding_or_reserved_site_names_are_refused(pooled: Path, tmp_path: Path) -> None:
    assert sanitise_site_name(" St. Mary's ") == "St_Mary_s"
    clinical = pd.read_csv(pooled / "clinical.csv", dtype=str, keep_default_na=False)
    clinical.loc[0, "institution"] = "St Mary's"
    clinical.to_csv(pooled / "clinical.csv", index=False)
    with pytest.raises(DataError, match=r"values \"St Mary's\" and \"St. Mary's\" both give the site name"):
        partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    clinical.loc[0, "institution"] = "External-Test"
    clinical.to_csv(pooled / "clinical.csv", index=False)
    with pytest.raises(DataError, match="the external test set's folder"):
        partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))


def test_a_failed_site_write_leaves_no_half_written_site(pooled: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    written = []
    real = pd.DataFrame.to_parquet

    def fail_on_the_second_site(self: pd.DataFrame, path: Path, *args: object, **kwargs: object) -> None:
        written.append(path)
        if len(written) == 2:
            raise OSError("disk full")
        real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail_on_the_second_site)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        partition_cohort(pooled, out, ByColumn("institution"))
    assert site_dirs(out) == ["General_Hospital", "panels"]  # the first site whole; the second not at all
    assert not list(out.glob(".*"))  # its temporary folder removed
    assert not (out / REPORT_FILE).exists()  # no partition.json: the folder is visibly incomplete
    assert (out / "General_Hospital" / "copy_number.parquet").is_file()


def test_mapping_file_errors_name_file_and_line(pooled: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("code,site\nA1,alpha\nA1,beta\n")
    with pytest.raises(ConfigError, match=r"map.csv: code 'A1' is mapped to both 'alpha' and 'beta'"):
        partition_cohort(pooled, tmp_path / "out", ByPattern(r"-(\w\d)-", mapping))
    mapping.write_text("A1,alpha,extra\n")
    with pytest.raises(ConfigError, match=r"map.csv: line 1 must be 'code,site'"):
        partition_cohort(pooled, tmp_path / "out", ByPattern(r"-(\w\d)-", mapping))
    with pytest.raises(ConfigError, match="not a regular expression"):
        partition_cohort(pooled, tmp_path / "out", ByPattern("(", mapping))


@pytest.mark.parametrize("layout", ["first-column", "named-index", "unnamed-index"])
def test_parquet_tables_keep_their_gene_ids_however_stored(pooled: Path, tmp_path: Path, layout: str) -> None:
    cnv = pd.read_parquet(pooled / "copy_number.parquet")
    if layout != "first-column":
        cnv = cnv.set_index("gene_id")
        if layout == "unnamed-index":
            cnv.index.name = None
    cnv.to_parquet(pooled / "copy_number.parquet")
    partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    site = pd.read_parquet(tmp_path / "out" / "St_Mary_s" / "copy_number.parquet")
    samples = [s for s in pd.read_csv(tmp_path / "out" / "St_Mary_s" / "manifest.csv").cnv_sample]
    expected = cnv[[c for c in cnv.columns if c in set(samples)]]
    if layout == "first-column":
        expected = cnv[["gene_id", *expected.columns]]
    pd.testing.assert_frame_equal(site, expected)
    assert len(site.columns) == len(samples) + (layout == "first-column")


def test_text_tables_keep_their_text_exactly(pooled: Path, tmp_path: Path) -> None:
    (pooled / "methylation.csv").write_text(
        'gene_id,METH-1,"METH,odd",METH-2\nG4,0.50,NA,1e-3\n"G5, quoted",,0.1000,7\n')
    manifest = pd.read_csv(pooled / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest.patient_id == "TCGA-A1-0003", "meth_sample"] = "METH,odd"
    manifest.loc[~manifest.meth_sample.isin(["METH-1", "METH,odd", "METH-2"]), "meth_sample"] = ""
    manifest.to_csv(pooled / "manifest.csv", index=False)
    partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    assert (tmp_path / "out" / "St_Mary_s" / "methylation.csv").read_text() == (pooled / "methylation.csv").read_text()


def test_a_site_named_like_the_panel_folder_is_refused_before_writing(pooled: Path, tmp_path: Path) -> None:
    clinical = pd.read_csv(pooled / "clinical.csv", dtype=str, keep_default_na=False)
    clinical["institution"] = clinical["institution"].replace({"St. Mary's": "Panels"})
    clinical.to_csv(pooled / "clinical.csv", index=False)
    with pytest.raises(ConfigError, match=r"its panel files lie in \['Panels'\], which is also a site's name"):
        partition_cohort(pooled, tmp_path / "out", ByColumn("institution"))
    assert not (tmp_path / "out").exists()
