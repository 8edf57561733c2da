"""Image-to-image retrieval (task kind ``image_retrieval``): revisited Oxford and Paris (+1M),
Google Landmarks v2, INSTRE, Copydays, CUB-200, iNat, any class-folder tree, and generated sets.

Modules: ``task`` (the task kind), ``metrics`` (the reference evaluators' numbers), one reader per
layout (``revisited``, ``classfolder``, ``gldv2``, ``copydays``), ``generate`` (offline sets),
``catalog`` (registered ids and the ``retrieval:<path>`` spelling) and ``board`` (the suite and the
leaderboard section). Importing the package registers them (``harness.plugins``).
"""
from . import board, catalog  # noqa: F401  (registration happens on import)
