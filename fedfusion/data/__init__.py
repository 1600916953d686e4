"""Site data: cohort manifests, slides, omics and clinical tables, turned into per-patient records."""
