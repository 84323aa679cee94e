"""Held-out quality: ranking metrics, the model choice on a validation split, the settings
search, the gate. Imports only ``trainer.models`` and below."""
