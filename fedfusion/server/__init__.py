"""The coordinator: the Flower ServerApp and what it records about a study."""
