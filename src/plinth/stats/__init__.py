"""The pure statistics under monitoring: column profiles, drift tests, model performance.

Ground package: numpy, pyarrow and scipy only, no store and no services, so every part of
Plinth may import it. Submodules are imported where used (``plinth.stats.profile``, ...).
"""
