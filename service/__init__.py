"""oegate's serving half: a FastAPI + onnxruntime server for Outlier Exposure gate artifacts.

Build the app with `service.app.create_app(Settings())`, or run `python -m service`. Never imports torch or
anything from `training/`: the two halves meet only at the artifact directory.
"""

__version__ = "0.1.0"
