"""Evaluation: generate images for every model state, score them, and turn the scores
into the persistence table, its extensions, plots and a report (design.md sections 2-3)."""
