"""Training data: built-in generators and loaders for CSV data in the documented schema (docs/data.md)."""
