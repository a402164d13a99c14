"""Evaluation like the paper: metrics, the evaluation run on an exported artifact, the report and its figures."""
