"""Radiology volumes (CT, MR, PET) as a modality: DICOM series and NIfTI files, tumour masks, radiomics features.

``series_check`` validates a DICOM series from its geometry and modality tags only, ``volume_reader`` reads a
volume and its mask as SimpleITK images, ``radiomics`` turns them into the study's feature list, ``prepare`` fills
the site's feature cache (``fedfusion site prepare``) and ``prepared_volumes`` is training's read-only view of it.
``volume_encoder`` is the study's alternative to radiomics: a frozen small 3-D CNN (``encoder = "cnn3d"``).
Nothing of a DICOM header but geometry and modality is read into the model or a log line.
"""
