"""Local multi-site simulation: many sites on one machine, in Flower's simulation engine."""
