"""Monitoring: profiles, drift of model inputs and predictions, late labels, performance,
monitors and alerts."""
