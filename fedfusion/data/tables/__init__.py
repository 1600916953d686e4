"""A site's tables: manifest, clinical, RNA-seq and copy-number files, read and validated against the study."""
