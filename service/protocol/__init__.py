"""The two faces of the one inference call: request parsing and response shaping for each API."""
