"""Synthetic hospital cohorts with a planted multimodal survival signal (see ``generator`` for the file layout)."""

from fedfusion.data.synthetic.generator import generate_cohort

__all__ = ["generate_cohort"]
