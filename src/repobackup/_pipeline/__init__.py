"""The run pipeline: what one backup or restore does, from selection to the last member.

It receives a small run context (source, target, store, executor, progress, clock).
"""
