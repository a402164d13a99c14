"""Image anomaly sets: noise and synthetic families, rendered glyph sets, real images, and the validation sets
built from the validation split (the only ones choices are made on)."""
