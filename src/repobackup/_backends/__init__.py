"""Backends: the Source/Target protocols, the SQLite and in-memory repositories, the registry.

Built on the model; nothing here knows about archives, runs or the engine.
"""
