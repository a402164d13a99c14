"""Data for training and evaluation: in-distribution sets, OE outlier pools and test anomaly sets.

One registry (`registry.py`) maps a spec string to a loader, so configs, the CLI and tests name data the same way.
Images are NCHW arrays; uint8 in [0, 255] for stored data sets, float32 in [0, 1] for generated anomalies.
`as_float` turns either into the float32 [0, 1] tensor layout that nets and the exported graph take.

Where things live:
- in-distribution: `mnist.py` (wheels), `array_file.py` (npz/npy), `image_folder.py`, `torchvision_sets.py`
- OE outlier pool: `pool_sources.py` (which images), `pool.py` (crops, cache file, user pools)
- test anomalies: `synthetic.py` (noise, blobs, negatives), `real_anomalies.py`, `rendered_sets.py` + `glyphs.py`
- shared pieces: `base.py` (types, errors), `convert.py`, `splits.py`, `cache.py`, `idx.py`, `wheels.py`
"""
