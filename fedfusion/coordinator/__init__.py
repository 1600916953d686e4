"""The coordinator: the Flower ServerApp, its strategies, checkpoints and what it records about a study."""
