"""A config becomes a run: building it, its settings and length, resuming, the tools' entry path."""
