"""hw-picollector: HomeWizard meters to a durable local store, then exactly once to Cassandra."""

__version__ = "0.1.0"
