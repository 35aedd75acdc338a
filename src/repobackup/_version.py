"""The version of repobackup, in this one place: the build reads it, and so does the code.

The manifest names it as the generator of a backup; `repobackup --version` prints it.
"""

__version__ = "0.2.0.dev0"
