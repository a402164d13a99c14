"""Review and curation of what the service captured (service/capture.py): list, sample, label, deduplicate, cap
per source and split off a held-back slice, for the OE flywheel's retraining (`python -m training captures ...`)."""
