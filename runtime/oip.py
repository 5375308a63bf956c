"""[decode] and [encode]: the Open Inference Protocol v2 (KServe V2 REST, JSON), with no transport.

Everything is derived from the task descriptor (``SPEC``):

* **inputs**: one ``BYTES`` tensor per column of ``SPEC.columns`` (its name or an alias), shape
  ``[N]``, one string per row. A list column (``candidate_labels``) takes per row a JSON list or
  comma-separated text, or is a ``[N, K]`` tensor of K labels per row. Request ``parameters``
  are the task's params (as MLflow's ``params``); unknown ones are ignored.
* **outputs**: one tensor per field of ``SPEC.outputs``: a ``tensor`` field (embeddings) is
  ``FP32`` with its real shape ``[N, H]``; ``string`` is ``BYTES``, ``double`` ``FP32``,
  ``long`` ``INT64``, shape ``[N]`` -- or ``[N, K]`` when each row has K results (``top_k``), as
  is an array of strings or numbers (zero-shot's labels and scores); objects and arrays of
  objects (entities, fill-mask candidates) are ``BYTES`` with one JSON text per row
  (``parameters.content_type`` ``"json"``). A ``[N, K]`` tensor needs the same K in every row:
  ragged results are a :class:`BadRequest` naming MLflow's ``/invocations`` for them.

Binary tensor data (Triton's ``Inference-Header-Content-Length`` extension) is not supported:
a JSON-only server is conformant; clients send ``binary_data=False``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .errors import BadRequest, ModelFailure
from .protocol import Payload
from .tasks.spec import Field, TaskSpec

SERVER_NAME = "exasol-mlflow-server"
PLATFORM = "exasol-onnx"  # the model format name (deploy/kserve's ServingRuntime)
SCALARS = {"string": "BYTES", "double": "FP32", "float": "FP32", "long": "INT64"}
SCALARS |= {"integer": "INT64", "boolean": "BOOL"}
JSON_PARAMETERS = {"content_type": "json"}


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": version, "extensions": []}


# ---- output fields ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Output:
    """How one ``SPEC.outputs`` field travels: datatype, metadata shape, and the encoding."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    kind: str  # "tensor" | "scalar" | "list" (array of scalars) | "json"

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def output_of(field: Field) -> Output:
    kind = field.type if isinstance(field.type, str) else field.type.get("type")
    if kind == "tensor":
        spec = field.type["tensor-spec"]  # type: ignore[index]
        dtype = "FP32" if str(spec.get("dtype", "float32")).startswith("float") else "INT64"
        return Output(field.name, dtype, tuple(spec.get("shape", (-1, -1))), "tensor")
    if isinstance(field.type, str) and field.type in SCALARS:
        return Output(field.name, SCALARS[field.type], (-1,), "scalar")
    if kind == "array":
        items = field.type.get("items", {})  # type: ignore[union-attr]
        item_type = items if isinstance(items, str) else items.get("type")
        if item_type in SCALARS:
            return Output(field.name, SCALARS[item_type], (-1, -1), "list")
    return Output(field.name, "BYTES", (-1,), "json")


def outputs_of(spec: TaskSpec, label_only: bool = False) -> tuple[Output, ...]:
    """The model's outputs; ``--label-only`` text-classification answers the label alone."""
    fields = spec.outputs[:1] if label_only else spec.outputs
    return tuple(output_of(f) for f in fields)


def model_metadata(
    name: str, version: str | None, spec: TaskSpec, label_only: bool = False
) -> dict[str, Any]:
    inputs = [{"name": c.name, "datatype": "BYTES", "shape": [-1]} for c in spec.columns]
    meta: dict[str, Any] = {"name": name}
    if version is not None:
        meta["versions"] = [version]
    meta.update(
        platform=PLATFORM,
        inputs=inputs,
        outputs=[o.metadata() for o in outputs_of(spec, label_only)],
        parameters={
            "task": spec.name,
            "optional_inputs": [c.name for c in spec.columns if not c.required],
            "params": {p.name: p.default for p in spec.params},
        },
    )
    return meta


# ---- requests ---------------------------------------------------------------------------------
@dataclass
class InferRequest:
    payload: Payload
    outputs: list[str] | None  # the requested outputs (None: all)
    id: str | None


def decode_request(body: bytes, spec: TaskSpec) -> InferRequest:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("inputs"), list) or not obj["inputs"]:
        raise BadRequest('The request must be a JSON object with a non-empty "inputs" list.')
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest('"parameters" must be a JSON object.')
    list_columns = {n for c in spec.columns if c.is_list for n in (c.name, *c.aliases)}
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for tensor in obj["inputs"]:
        name, values = _decode_input(tensor, list_columns)
        if rows is not None and len(values) != rows:
            raise BadRequest(
                f"Input {name!r} has {len(values)} rows but an earlier input has {rows}: every "
                "input tensor needs one element per row."
            )
        rows = len(values)
        columns[name] = values
    if not rows:
        raise BadRequest("The input is empty: send at least one row.")
    return InferRequest(
        Payload(columns, rows, params), _requested(obj.get("outputs")), obj.get("id")
    )


def _decode_input(tensor: Any, list_columns: set[str]) -> tuple[str, list[Any]]:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise BadRequest('Every input must be an object with a "name".')
    name = tensor["name"]
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(
            f"Input {name!r} has datatype {tensor.get('datatype')!r}; text inputs are BYTES."
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(_is_dim(d) for d in shape):
        raise BadRequest(f"Input {name!r} needs a shape: a list of non-negative integers.")
    if "data" not in tensor:
        raise BadRequest(
            f'Input {name!r} has no "data" (binary tensor data is not supported: send JSON, '
            "e.g. tritonclient's binary_data=False)."
        )
    flat = _flatten(tensor["data"])
    if len(flat) != math.prod(shape):
        raise BadRequest(
            f"Input {name!r} has {len(flat)} elements but its shape {shape} needs "
            f"{math.prod(shape)}."
        )
    if name in list_columns and len(shape) == 2:  # [N, K]: K labels per row
        width = shape[1]
        return name, [flat[i * width : (i + 1) * width] for i in range(shape[0])]
    if len(shape) > 1 and math.prod(shape[1:]) != 1:
        raise BadRequest(f"Input {name!r} must have shape [N] (one text per row), not {shape}.")
    return name, flat


def _is_dim(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest('An input\'s "data" must be a list.')
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def _requested(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest('"outputs" must be a list of objects with a "name".')
    return [o["name"] for o in outputs]


# ---- responses --------------------------------------------------------------------------------
def encode_response(
    model: str,
    version: str | None,
    request: InferRequest,
    outputs: Sequence[Output],
    predictions: Any,
) -> bytes:
    """The inference response: the requested outputs of ``predictions`` (one per input row)."""
    by_name = {o.name: o for o in outputs}
    wanted = request.outputs if request.outputs is not None else list(by_name)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise BadRequest(f"Unknown outputs {unknown}; this model has {list(by_name)}.")
    columns = _columns(predictions, outputs)
    response: dict[str, Any] = {"model_name": model}
    if version is not None:
        response["model_version"] = version
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = [_tensor(by_name[n], columns[n]) for n in wanted]
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


def _columns(predictions: Any, outputs: Sequence[Output]) -> dict[str, Any]:
    """Per output, its value for every row."""
    if len(outputs) == 1 and outputs[0].kind == "tensor":
        return {outputs[0].name: predictions}
    columns: dict[str, list[Any]] = {o.name: [] for o in outputs}
    first = outputs[0].name
    for row in predictions:
        if isinstance(row, Mapping) and all(o.name in row for o in outputs):
            for o in outputs:
                columns[o.name].append(row[o.name])
        elif (
            len(outputs) > 1 and isinstance(row, list) and all(isinstance(r, Mapping) for r in row)
        ):
            for o in outputs:  # top_k: a list of results per row
                columns[o.name].append([item.get(o.name) for item in row])
        elif isinstance(row, str) or len(outputs) == 1:  # --label-only; a one-field prediction
            columns[first].append(row)
        else:
            raise ModelFailure(f"Cannot encode a prediction of type {type(row).__name__} as OIP.")
    return columns


def _tensor(output: Output, values: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": output.name, "datatype": output.datatype}
    if output.kind == "json":
        tensor["shape"] = [len(values)]
        tensor["parameters"] = JSON_PARAMETERS
        tensor["data"] = [
            orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode() for v in values
        ]
        return tensor
    if output.kind == "tensor":
        array = np.asarray(values, dtype=np.float32 if output.datatype == "FP32" else np.int64)
        tensor["shape"] = list(array.shape)
        tensor["data"] = array.ravel()
        return tensor
    nested = any(isinstance(v, list) for v in values)
    if nested:
        widths = {len(v) if isinstance(v, list) else -1 for v in values}
        if len(widths) != 1 or -1 in widths:
            raise BadRequest(
                f"Output {output.name!r} has a different number of results per row ({sorted(widths)}); "
                "an OIP tensor is rectangular: send such rows in separate requests, or use "
                "MLflow's /invocations."
            )
        shape = [len(values), widths.pop()]
        flat = [x for v in values for x in v]
    else:
        shape, flat = [len(values)], list(values)
    tensor["shape"] = shape
    if output.datatype == "FP32":
        tensor["data"] = np.asarray(flat, dtype=np.float32)
    elif output.datatype == "INT64":
        tensor["data"] = [int(x) for x in flat]
    else:
        tensor["data"] = [x if isinstance(x, str) else str(x) for x in flat]
    return tensor
