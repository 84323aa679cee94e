"""The published lists of a fitted model: exact and approximate top-N search over factors, and
the batches the publisher writes. Imports only ``trainer.models`` and below."""
