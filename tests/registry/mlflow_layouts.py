"""MLflow model directories as MLflow writes them, built from the quick demo
models: the layouts (MLflow 2.x/3.x transformers: MLmodel + model/ +
components/tokenizer/; MLflow 3.x sklearn: MLmodel + model.skops) shared by
the MLflow upload tests and the attack corpus."""

from tests.conftest import make_tar_gz, make_zip

PICKLE_BYTES = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94."
RUN_ID = "8c2f4a1e9d7b4c3a8e6f5d4c3b2a1f0e"
MODEL_UUID = "3f1c0c6e5b8e4d2a9a7b1c2d3e4f5a6b"
TEXTS = ["这本书写得太好了，非常喜欢！", "质量很差，完全不值这个价。", "还行吧", "物流很快，包装完好"]

# Mirrors what mlflow.transformers.save_model writes for a text-classification
# pipeline (MLflow 2.x; 3.x adds model_id): weights under model/, the
# tokenizer under components/tokenizer/, signature parts as JSON strings.
TRANSFORMERS_MLMODEL = f"""artifact_path: model
flavors:
  python_function:
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.transformers
    python_version: 3.11.9
  transformers:
    code: null
    components:
    - tokenizer
    framework: pt
    instance_type: TextClassificationPipeline
    model_binary: model
    pipeline_model_type: BertForSequenceClassification
    source_model_name: glassbox-demo/bert-zh-sentiment
    task: text-classification
    tokenizer_type: BertTokenizerFast
    torch_dtype: torch.float32
    transformers_version: 4.46.3
metadata:
  team: nlp
  dataset: weibo-demo
mlflow_version: 2.17.2
model_size_bytes: 1953202
model_uuid: {MODEL_UUID}
run_id: {RUN_ID}
signature:
  inputs: '[{{"type": "string", "required": true}}]'
  outputs: '[{{"type": "string", "name": "label", "required": true}}, {{"type": "double", "name": "score", "required": true}}]'
  params: null
utc_time_created: '2024-11-20 09:41:07.123456'
"""

# Mirrors mlflow.sklearn.save_model(..., serialization_format="skops") of MLflow 3.x.
SKLEARN_MLMODEL = """flavors:
  python_function:
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.sklearn
    model_path: model.skops
    predict_fn: predict
    python_version: 3.11.9
  sklearn:
    code: null
    pickled_model: model.skops
    serialization_format: skops
    sklearn_version: 1.5.2
    skops_trusted_types: null
mlflow_version: 3.1.0
model_id: m-0a24c301ab8840bc9af390a84b80d1ca
model_uuid: m-0a24c301ab8840bc9af390a84b80d1ca
run_id: 627648c8e53549f0acf8ebeb6b27aba8
signature:
  inputs: '[{"type": "string", "name": "text", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "object", "shape": [-1]}}]'
  params: null
utc_time_created: '2025-06-01 08:00:00.000000'
"""

ENVIRONMENT_FILES = {
    "conda.yaml": b"name: mlflow-env\ndependencies:\n- python=3.11.9\n- pip:\n  - mlflow==2.17.2\n",
    "python_env.yaml": b"python: 3.11.9\ndependencies:\n- -r requirements.txt\n",
    "requirements.txt": b"mlflow==2.17.2\ntorch==2.5.1\ntransformers==4.46.3\n",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def in_folder(members: dict[str, bytes], folder: str) -> dict[str, bytes]:
    return {f"{folder}/{name}": data for name, data in members.items()} if folder else dict(members)


def archive(members: dict[str, bytes], container: str) -> bytes:
    return make_zip(members) if container == "zip" else make_tar_gz(members)


def mlflow_transformers(bert_members: dict[str, bytes], mlmodel: str = TRANSFORMERS_MLMODEL) -> dict[str, bytes]:
    """The demo BERT as mlflow.transformers.save_model lays it out."""
    members = {"MLmodel": mlmodel.encode(), **ENVIRONMENT_FILES}
    for name, data in bert_members.items():
        members[f"components/tokenizer/{name}" if name in TOKENIZER_FILES else f"model/{name}"] = data
    return members


def mlflow_sklearn(skops_bytes: bytes, mlmodel: str = SKLEARN_MLMODEL) -> dict[str, bytes]:
    return {"MLmodel": mlmodel.encode(), "model.skops": skops_bytes, **ENVIRONMENT_FILES}
