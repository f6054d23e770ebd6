"""Batch: nightly scoring of every active customer in Spark, into the predictions database."""
