"""The recommender itself: extracts and counts -> filters -> utility matrix -> a model ->
published lists. Knows no Kafka; reads and writes Redis only through ``store``.

Its packages import only the ones below them (``tests/test_layout.py`` checks it):
``commands`` (every command's handler and what it prints) -> ``pipeline`` (a retrain from
Redis, step by step) -> ``quality`` (held-out metrics, the model choice, the search, the
gate) and ``scoring`` (the published lists of any model) -> ``models`` (one file per family,
one interface; the model files) -> ``data`` (extracts, the matrix and its filters) ->
``config`` and ``settings`` (every setting and its default; which value wins).
"""
