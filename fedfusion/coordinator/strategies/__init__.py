"""Aggregation strategies run by the coordinator (Flower Message-API strategies, patient-weighted)."""
