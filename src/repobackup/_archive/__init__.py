"""The archive: layout, manifest, record lines, the store boundary, folder and zip forms.

Also the catalog of a task folder, verify and retention, which read archives only.
"""
