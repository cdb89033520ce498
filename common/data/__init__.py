"""Data set loaders for the real on-disk layouts, and seeded synthetic writers of the same layouts."""
