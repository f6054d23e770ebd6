"""Features: the Spark-free feature spec, the Spark feature job, the Feast store and its fast Redis writer."""
