"""The engine: tasks created, claimed, run and recovered; the scheduler on top of it.

The one place that ties the model, backends, archive, task store and pipeline together.
"""
