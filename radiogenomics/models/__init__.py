"""AnnData-facing model classes."""
