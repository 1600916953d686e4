"""Stain normalisation of H&E tiles to study-fixed targets (Reinhard, Macenko)."""
