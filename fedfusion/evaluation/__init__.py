"""Evaluation metrics that sites report and the server pools."""
