"""Site data: cohort manifests, slides, omics and clinical tables, turned into per-patient records.

Entry points: ``slides.prepare.prepare_slide_features`` (``fedfusion site prepare``: every slide's tile features
into the site's cache, ahead of any study) and ``cohort.load_site_cohort`` (one site's files and prepared features
-> ``records.SiteCohort``; it never extracts). Along the way:
``tables`` reads and validates the tables as the study schema declares them (``manifest``, ``clinical`` with
``covariates`` and ``task_labels``, ``omics`` per layer; ``table_sources`` says where the omics tables are,
``table_files`` and ``panel_matrix`` read them); ``slides`` opens a slide with
OpenSlide, ``tissue_mask`` finds tissue, ``tiling`` lays the tile grid at the study resolution and streams tiles,
``stain_normalization`` / ``macenko`` normalise their colour, ``tile_encoder`` turns tiles into features,
``slide_features`` ties those together for one slide and ``feature_cache`` keeps the result on site;
``progress`` draws bars on a terminal; ``patient_split`` assigns train/test per patient.
``cohort_index`` reads a multi-site cohort directory (``cohort.json``, ``study.toml``, oracle) and ``synthetic``
generates one, in the same layout a real site uses.
"""
