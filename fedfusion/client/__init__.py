"""The site side of a round: local training and evaluation, and the Flower adapter around them."""
