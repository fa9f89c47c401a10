"""Stand-alone utilities around the training framework (label conversion)."""
