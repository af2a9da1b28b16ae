"""Data preparation: sources, filters, dedup, secrets, splits and the dataset folder."""
