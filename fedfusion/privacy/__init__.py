"""Patient-level differential privacy: DP-SGD through Opacus and a privacy ledger that spans rounds."""
