"""What both modalities share about data: the types and errors (`base.py`: splits, the sealed test split), seeded
splits (`splits.py`), the data cache (`cache.py`), files read from installed wheels (`wheels.py`), and the one
registry (`registry.py`) that maps a spec string to a loader, so configs, the CLI and tests name data the same way.

The sources themselves live with their modality: `training/image/` (in-distribution image sets, `anomalies/`, the
OE `pool/`) and `training/text/`. Images are NCHW arrays; uint8 in [0, 255] for stored data sets, float32 in [0, 1]
for generated anomalies; `as_float` turns either into the float32 [0, 1] layout that nets and the graph take.
"""
