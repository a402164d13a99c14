"""Images: the nets, in-distribution image sets and readers, anomaly sets (`anomalies/`) and the OE pool (`pool/`)."""
