"""exasol-mlflow-server: ONNX Runtime serving of Hugging Face models behind MLflow's scoring protocol."""

__version__ = "0.1.0"
