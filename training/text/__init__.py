"""Text data for oegate: in-distribution sets, the OE corpus and anomaly sets (`data`, `corpora`, `anomalies`)."""
