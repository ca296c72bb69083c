"""Offline training jobs: one module per model, each seeded and reproducible, each ending in export."""
