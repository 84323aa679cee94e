"""The model families, one file each with one interface (``base.py``; by name in
``registry.py``): fit, lists, the fold-in ``recs update`` uses; and the model files
(``file.py``). Imports only ``trainer.data`` and below."""
