"""The recommender itself: extracts -> filters -> utility matrix -> ALS -> scores.

Knows no Kafka. Reads and writes Redis only through ``store``.
"""
