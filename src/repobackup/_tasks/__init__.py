"""Task stores: where tasks and their runs live, in memory or in SQLite across processes.

They keep state; they never run anything.
"""
