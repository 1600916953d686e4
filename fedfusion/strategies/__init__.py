"""Aggregation strategies run by the coordinator (Flower Message-API strategies)."""

from fedfusion.strategies.patient_weighted_fedavg import PatientWeightedFedAvg, SiteReply

__all__ = ["PatientWeightedFedAvg", "SiteReply"]
