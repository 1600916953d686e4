"""The patient-level multimodal survival model: modality encoders, fusion, heads and the per-patient loss."""
