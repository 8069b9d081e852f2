"""MLflow model directories, uploaded as MLflow saved them.

An MLflow model is a folder with an `MLmodel` file (YAML) that names its
flavors. Glassbox accepts the two whose weights load without unpickling, and
stores the archive as uploaded:

- `transformers` saved with its weights (save_pretrained=True, MLflow's
  default): the model's `save_pretrained` output in the folder `model_binary`
  names ("model") and each component's in `components/<name>/`. These names
  are MLflow 2.x/3.x's own: `_MODEL_BINARY_FILE_NAME = "model"` and
  `_COMPONENTS_BINARY_DIR_NAME = "components"` in mlflow/transformers/model_io.py,
  the keys (`model_binary`, `components`, `pipeline_model_type`, ...) in
  `FlavorKey` of mlflow/transformers/flavor_config.py. Once checked, the
  weights' and the tokenizer's files are moved into one folder: the layout of
  a plain transformers upload, which every loader here already reads.
- `sklearn` saved with `serialization_format: skops` (MLflow 3.x,
  `mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS`; the file is `pickled_model:
  model.skops` beside MLmodel). The `skops_trusted_types` MLflow records are
  ignored: Glassbox's own allowlist decides (registry/predictors.py).

The YAML is read with yaml.safe_load, which builds plain data only (a
`!!python/object` tag is an error, never a constructor call); mlflow itself is
never imported.
"""

import datetime
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from glassbox.errors import InvalidInput
from registry.archives import check_member_name

MLMODEL_FILE = "MLmodel"
# The upload's `flavor` that asks Glassbox to read the flavor from MLmodel.
MLFLOW_UPLOAD_FLAVOR = "mlflow"
# MLflow's flavor names that Glassbox serves, mapped to its own.
SUPPORTED_FLAVORS = {"transformers": "transformers", "sklearn": "sklearn"}
# A pyfunc wrapper may point only at the native flavor's own loader; anything
# else is custom Python (a loader module shipped in code/, a cloudpickled
# python_model) that Glassbox would have to run.
_NATIVE_LOADERS = {"mlflow.transformers", "mlflow.sklearn"}
_MLMODEL_MAX_BYTES = 1024 * 1024
# Nodes plus characters copied out of MLmodel into the card. YAML aliases can
# make a small file a huge tree ("billion laughs"); the walk stops here.
_CARD_BUDGET = 2_000_000
_SCALAR_MAX_CHARS = 500
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".h5")

HOW_TO_SAVE_TRANSFORMERS = (
    "save it with safetensors weights: mlflow.transformers.save_model(pipeline, path) with transformers >= 4.35 "
    "(safe_serialization=True is the default), or model.save_pretrained(path, safe_serialization=True) "
    "and upload that folder as a plain transformers artifact"
)
HOW_TO_SAVE_SKLEARN = (
    'save it with skops: mlflow.sklearn.save_model(model, path, serialization_format="skops") (MLflow 3), '
    "or skops.io.dump(model, 'model.skops') and upload the .skops file directly with flavor=sklearn"
)


@dataclass(frozen=True)
class MlflowModel:
    """What an MLmodel file says, once it passed every check."""

    root: str  # the folder holding MLmodel inside the archive ("" for the archive's root)
    flavor: str  # Glassbox's flavor
    weights: str  # transformers: the model folder; sklearn: the .skops file (relative to root)
    components: tuple[str, ...] = ()
    card: dict = field(default_factory=dict)


def find_mlmodel_root(names) -> str | None:
    """The folder holding `MLmodel`: the archive's root, or its single
    top-level folder (what zipping the folder MLflow wrote gives). None when
    the archive is not an MLflow model."""
    names = set(names)
    if MLMODEL_FILE in names:
        return ""
    # macOS's "Compress" adds a __MACOSX/ folder of resource forks beside the one it zipped.
    tops = {name.split("/", 1)[0] for name in names} - {"__MACOSX"}
    if len(tops) == 1:
        top = next(iter(tops))
        if f"{top}/{MLMODEL_FILE}" in names:
            return top
    return None


def read_mlflow_model(staging: Path, root: str, names: set[str]) -> MlflowModel:
    """Read and check the MLmodel of an unpacked archive (`names` are its
    members). Raises InvalidInput saying how to save the model safely when its
    flavor would load a pickle or run code."""
    document = _load_mlmodel(staging / root / MLMODEL_FILE if root else staging / MLMODEL_FILE)
    flavors = document.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise InvalidInput("MLmodel has no `flavors` mapping; it is not an MLflow model file.")
    prefix = f"{root}/" if root else ""
    inside = {name[len(prefix) :] for name in names if name.startswith(prefix)}
    found = [name for name in SUPPORTED_FLAVORS if name in flavors]
    _refuse_custom_pyfunc(flavors, native_flavor_found=bool(found))
    if not found:
        named = ", ".join(sorted(str(name) for name in flavors))[:300]
        raise InvalidInput(
            f"MLmodel names the flavors {named}; Glassbox accepts an MLflow model of the transformers flavor "
            "(safetensors weights) or the sklearn flavor saved with skops."
        )
    if len(found) > 1:
        raise InvalidInput("MLmodel names both the transformers and the sklearn flavor; upload one model at a time.")
    mlflow_flavor = found[0]
    conf = flavors[mlflow_flavor]
    if not isinstance(conf, dict):
        raise InvalidInput(f"MLmodel's {mlflow_flavor} flavor is not a mapping.")
    if mlflow_flavor == "transformers":
        weights, components = _check_transformers(conf, inside)
    else:
        weights, components = _check_sklearn(conf, inside), ()
    card = _card(document, mlflow_flavor, conf)
    return MlflowModel(root, SUPPORTED_FLAVORS[mlflow_flavor], weights, components, card)


def arrange_for_loading(staging: Path, model: MlflowModel) -> None:
    """Move a transformers model's weights and tokenizer files into the
    staging folder's root, where the loaders look (a sklearn model's one .skops
    file is found wherever it is)."""
    if model.flavor != "transformers":
        return
    base = staging / model.root if model.root else staging
    for folder in (model.weights, *(f"components/{name}" for name in model.components)):
        source = base / folder
        for entry in sorted(source.iterdir()):
            target = staging / entry.name
            if target.exists() or target.is_symlink():
                raise InvalidInput(
                    f"{folder}/{entry.name} would overwrite another file named {entry.name!r} "
                    "(the model folder and its components must not share file names)."
                )
            os.replace(entry, target)
        source.rmdir()


def _load_mlmodel(path: Path) -> dict:
    import yaml

    if path.stat().st_size > _MLMODEL_MAX_BYTES:
        raise InvalidInput(f"MLmodel is larger than {_MLMODEL_MAX_BYTES} bytes; an MLmodel file is not.")
    try:
        text = path.read_bytes().decode("utf-8")
        # safe_load: plain YAML data only. A tag such as !!python/object is a
        # ConstructorError here, never an object built.
        document = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise InvalidInput("MLmodel is not UTF-8 text.") from exc
    except yaml.constructor.ConstructorError as exc:
        tag = getattr(exc, "problem", "") or "a tag"
        raise InvalidInput(
            f"MLmodel is refused: {str(tag)[:200]}. Glassbox reads plain YAML data only (no Python object tags)."
        ) from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise InvalidInput(f"MLmodel is not valid YAML{at}.") from exc
    except RecursionError as exc:
        raise InvalidInput("MLmodel nests too deeply.") from exc
    except (ValueError, OverflowError) as exc:
        # A scalar YAML resolves but Python cannot build: a 5000-digit int, a 13th month.
        raise InvalidInput(f"MLmodel holds a value that cannot be read: {str(exc).split(';')[0][:200]}.") from exc
    if not isinstance(document, dict):
        raise InvalidInput("MLmodel must be a YAML mapping (flavors, run_id, signature, ...).")
    return document


def _refuse_custom_pyfunc(flavors: dict, *, native_flavor_found: bool) -> None:
    pyfunc = flavors.get("python_function")
    if pyfunc is None:
        return
    if not isinstance(pyfunc, dict):
        raise InvalidInput("MLmodel's python_function flavor is not a mapping.")
    how = (
        "Log the model with its native flavor instead: mlflow.transformers (safetensors weights) or mlflow.sklearn "
        '(serialization_format="skops").'
    )
    if "python_model" in pyfunc or "cloudpickle_version" in pyfunc:
        saved = pyfunc.get("python_model")
        named = f" ({str(saved)[:100]!r})" if isinstance(saved, str) else ""
        raise InvalidInput(
            f"MLmodel's python_function flavor is a cloudpickled python_model{named}: a pickle of custom Python "
            f"that Glassbox never loads. {how}"
        )
    loader = pyfunc.get("loader_module")
    if native_flavor_found and loader and loader not in _NATIVE_LOADERS:
        raise InvalidInput(
            f"MLmodel's python_function flavor loads through loader_module {str(loader)[:100]!r}: custom Python "
            f"that Glassbox never runs. {how}"
        )


def _relative_path(value, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"MLmodel's {what} must be a relative path.")
    try:
        return check_member_name(value)
    except InvalidInput as exc:
        raise InvalidInput(f"MLmodel's {what} {value[:100]!r} is not a safe relative path.") from exc


def _check_transformers(conf: dict, inside: set[str]) -> tuple[str, tuple[str, ...]]:
    pickled = sorted(name for name in inside if name.lower().endswith(PICKLE_WEIGHT_SUFFIXES))
    if pickled:
        raise InvalidInput(
            f"{pickled[0]!r} holds pickle weights (pytorch_model.bin and the like); Glassbox never loads pickles. "
            f"Re-save the MLflow model with safe_serialization=True: {HOW_TO_SAVE_TRANSFORMERS}."
        )
    if "model_binary" not in conf:
        raise InvalidInput(
            "This MLflow transformers model was saved with save_pretrained=False: it names a Hugging Face Hub "
            "repository instead of holding its weights. Save it with save_pretrained=True (the default)."
        )
    if conf.get("peft_adaptor"):
        raise InvalidInput("MLflow PEFT adapters are not supported; merge the adapter into the model and save that.")
    weights = _relative_path(conf["model_binary"], "model_binary")
    if not any(name.startswith(f"{weights}/") for name in inside):
        raise InvalidInput(f"MLmodel's model_binary is {weights!r}, but the archive has no such folder.")
    components = conf.get("components") or []
    if not isinstance(components, list) or not all(isinstance(name, str) for name in components):
        raise InvalidInput("MLmodel's transformers components must be a list of names.")
    if "processor_type" in conf or set(components) - {"tokenizer"}:
        extra = sorted(set(components) - {"tokenizer"}) or ["processor"]
        raise InvalidInput(
            f"MLmodel's transformers flavor has the components {', '.join(extra)[:200]}; Glassbox serves text "
            "classifiers, which need a tokenizer only."
        )
    if "tokenizer" not in components:
        raise InvalidInput("MLmodel's transformers flavor saved no tokenizer (components: [tokenizer]).")
    if not any(name.startswith("components/tokenizer/") for name in inside):
        raise InvalidInput("MLmodel lists a tokenizer, but the archive has no components/tokenizer/ folder.")
    if not any(name.startswith(f"{weights}/") and name.endswith(".safetensors") for name in inside):
        raise InvalidInput(f"{weights}/ holds no *.safetensors weights; {HOW_TO_SAVE_TRANSFORMERS}.")
    return weights, ("tokenizer",)


def _check_sklearn(conf: dict, inside: set[str]) -> str:
    serialization = conf.get("serialization_format")
    if serialization != "skops":
        # MLflow's sklearn default was cloudpickle before skops existed: a
        # missing format is a pickle too.
        said = str(serialization)[:50] if serialization is not None else "not given (cloudpickle)"
        raise InvalidInput(
            f"This MLflow sklearn model is serialized with {said}, a pickle format that Glassbox never loads; "
            f"{HOW_TO_SAVE_SKLEARN}."
        )
    skops_file = _relative_path(conf.get("pickled_model"), "sklearn pickled_model")
    if not skops_file.endswith(".skops"):
        raise InvalidInput(f"MLmodel's sklearn model file {skops_file!r} is not a .skops file.")
    if skops_file not in inside:
        raise InvalidInput(f"MLmodel names {skops_file!r}, but the archive has no such file.")
    return skops_file


def _card(document: dict, mlflow_flavor: str, conf: dict) -> dict:
    """The MLmodel facts a reviewer reads on the version page, as JSON data."""
    budget = [_CARD_BUDGET]
    card = {"flavor": mlflow_flavor}
    for key in ("run_id", "model_uuid", "model_id", "utc_time_created", "mlflow_version", "artifact_path"):
        value = document.get(key)
        card[key] = _scalar(value) if value is not None else None
    signature = document.get("signature")
    if isinstance(signature, dict):
        card["signature"] = {
            part: _signature_part(signature.get(part), budget)
            for part in ("inputs", "outputs", "params")
            if signature.get(part) is not None
        }
    else:
        card["signature"] = None
    metadata = document.get("metadata")
    card["metadata"] = _plain(metadata, budget, depth=0) if metadata is not None else None
    detail_keys = {
        "transformers": ("task", "pipeline_model_type", "instance_type", "source_model_name", "transformers_version"),
        "sklearn": ("serialization_format", "sklearn_version"),
    }[mlflow_flavor]
    card["flavor_details"] = {key: _scalar(conf[key]) for key in detail_keys if conf.get(key) is not None}
    return card


def _scalar(value) -> str:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)[:_SCALAR_MAX_CHARS] if not isinstance(value, (dict, list)) else json.dumps(value)[:100]


def _signature_part(value, budget: list[int]):
    # MLflow writes each part as a JSON string (a list of column or tensor specs).
    if isinstance(value, str):
        _spend(budget, len(value))
        try:
            return _plain(json.loads(value), budget, depth=0)
        except (ValueError, RecursionError):
            return value
    return _plain(value, budget, depth=0)


def _spend(budget: list[int], amount: int) -> None:
    budget[0] -= amount
    if budget[0] < 0:
        raise InvalidInput("MLmodel's signature and metadata expand to more data than an MLmodel file holds.")


def _plain(value, budget: list[int], *, depth: int):
    """A JSON-safe copy of YAML data, within the budget (aliases counted each time they are used)."""
    _spend(budget, 1)
    if depth > 50:
        raise InvalidInput("MLmodel's metadata nests too deeply.")
    if isinstance(value, dict):
        return {str(key)[:200]: _plain(item, budget, depth=depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(item, budget, depth=depth + 1) for item in value]
    if isinstance(value, str):
        _spend(budget, len(value))
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON (and PostgreSQL's jsonb) have no NaN or infinity
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise InvalidInput(f"MLmodel holds a {type(value).__name__} value; Glassbox reads plain YAML data only.")
