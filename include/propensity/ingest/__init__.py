"""Ingest: source adapters, collection of one day, the trading calendar, and validation with quarantine."""
