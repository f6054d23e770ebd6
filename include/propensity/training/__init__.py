"""Training: point-in-time training sets, XGBoost, evaluation, the gate, the registry and the DAG's steps."""
