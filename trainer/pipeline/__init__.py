"""A retrain from the Redis counts, step by step (``retrain.py``), under the language's lock,
and the rounds of ``recs train``; take-down refills; the Spark executors path. Redis only
through ``store``; imports ``trainer.quality``, ``trainer.scoring`` and below."""
