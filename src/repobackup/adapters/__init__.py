"""Thin adapters that expose an `Engine` as the spec's three endpoints.

`adapters.json` answers with JSON envelopes in-process; `adapters.wsgi` serves them over HTTP.
"""
