"""The model server: a Seldon Core Python wrapper that serves an MLflow model and logs every
prediction to Kafka in the inference-log schema the drift detector reads.

Run by ``seldon-core-microservice model_server.server.ModelServer`` (see README.md).
"""
