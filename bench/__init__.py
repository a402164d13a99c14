"""Side-by-side HTTP benchmark of oegate against a plain FastAPI + onnxruntime endpoint and NVIDIA Triton (PyTriton).

Run on demand with `make bench` or `python -m bench --help`; never part of the test suite. Every number in a report
comes from one run on one machine, so the ratios between servers mean more than the absolute rates.

| file | concern |
|---|---|
| `__main__.py` | the command line: options, then `runner.run` |
| `runner.py` | the run: machine facts, each server started, checked, loaded with wrk at each concurrency, stopped |
| `inputs.py` | the test digit, the request bodies (native and V2), reading a prediction out of a response |
| `wrk.py` | the Lua script given to wrk, running it pinned to a core, parsing its summary |
| `servers.py` | how each server is started (pinned to a core), checked for readiness, asked for its batch sizes |
| `report.py` | the results table, ratios, and the `.md` + `.json` files |
| `baseline_server.py` | the plain FastAPI + onnxruntime endpoint (one session run per request, no batching) |
| `triton_server.py` | the PyTriton launcher; runs in the Python 3.12 venv PyTriton needs, imports nothing from here |
"""
