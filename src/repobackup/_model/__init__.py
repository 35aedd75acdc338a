"""The model: tasks, records' JSON shape, validation rules, selection, cron and times.

The bottom layer: it imports nothing else of the package but the exceptions.
"""
