"""Shadow comparison: a default model's items run again on its candidate, and the report."""
