"""Long-running services fed by new views: the Kafka consumer and the incremental updater."""
