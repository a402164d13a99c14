"""HTTP routes, one router per file: each parses the request, calls one function, and shapes the response."""
