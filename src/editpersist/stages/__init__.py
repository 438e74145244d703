"""The stages that make model states: editing and fine-tuning (each called by a workflow script)."""
