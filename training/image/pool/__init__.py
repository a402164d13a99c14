"""The image OE pool: its sources and their LOSO groups (`sources.py`, `excluded.txt`), the views cut from them
(`build.py`), and the screen that finds digit-like clip art (`screen.py`)."""
