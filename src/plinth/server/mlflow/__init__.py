"""The MLflow REST API (``/api/2.0/mlflow/``) and its artifact proxy
(``/api/2.0/mlflow-artifacts/``), answered by Plinth's own services, so that the official
``mlflow`` client works against ``plinth server`` unchanged.

Each module turns MLflow's requests into calls of the services every other interface
uses (permissions included) and their answers into MLflow's JSON; errors take MLflow's
codes (``codes.py``). What differs from MLflow is listed in the README.
"""
