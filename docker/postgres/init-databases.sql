-- One server, one database per concern; the role is the one POSTGRES_USER created.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
-- The pipeline's own tables: the registry audit log (alias moves) and batch predictions.
CREATE DATABASE propensity;
