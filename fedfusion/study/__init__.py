"""What defines a study: its configuration and its identity (hashed into ledger rounds and checkpoints)."""
