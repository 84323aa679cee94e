"""Views tables and the utility matrix: CSV extracts, folders and Parquet, the vocabularies,
the platform's filters, hold-out splits, the synthetic generator, the SparkSession. Imports
only ``trainer.config``/``trainer.settings`` of the trainer."""
