"""A small ONNX graph builder in double precision: named constants, nodes, typed inputs and outputs.

Every number the compiled graph holds is float64 (ONNX ``DOUBLE``), so each step can repeat scikit-learn's
own arithmetic operation for operation (``(x - mean) / scale`` stays a subtraction then a division).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

__all__ = ["GraphBuilder", "ML_OPSET", "MAIN_OPSET", "IR_VERSION"]

#: ai.onnx.ml opset 5 has ``TreeEnsemble`` with double thresholds, leaf weights and set membership splits,
#: and ``LabelEncoder`` with tensor keys (onnxruntime >= 1.20 runs both).
ML_OPSET = 5
MAIN_OPSET = 21
IR_VERSION = 10


class GraphBuilder:
    """Collects the nodes, constants, inputs and outputs of one graph; :meth:`model` serializes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self._ids = itertools.count()

    def fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def input(self, name: str, kind: str) -> str:
        """A ``[N, 1]`` graph input: ``"double"`` or ``"string"``."""
        from onnx import TensorProto, helper

        elem = TensorProto.DOUBLE if kind == "double" else TensorProto.STRING
        self.inputs.append(helper.make_tensor_value_info(name, elem, [None, 1]))
        return name

    def const(self, value: Any, hint: str = "c", dtype: Any = np.float64) -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        arr = np.asarray(value, dtype=dtype) if dtype is not object else np.asarray(value, dtype=object)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, *, domain: str = "",
           **attrs: Any) -> str:
        """Add one node with one output and return that output's name."""
        from onnx import helper

        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], domain=domain, **attrs))
        return out

    def tensor_attr(self, value: Any, dtype: Any = np.float64) -> Any:
        from onnx import numpy_helper

        return numpy_helper.from_array(np.asarray(value, dtype=dtype))

    def output(self, source: str, name: str, width: int | None) -> None:
        """Expose ``source`` (double ``[N, width]``, or ``[N]`` when width is None) as graph output ``name``."""
        from onnx import TensorProto, helper

        self.nodes.append(helper.make_node("Identity", [source], [name]))
        shape: list[Any] = [None] if width is None else [None, width]
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.DOUBLE, shape))

    def model(self) -> bytes:
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers)
        model = helper.make_model(graph, producer_name="skiff", opset_imports=[
            helper.make_opsetid("", MAIN_OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
        model.ir_version = IR_VERSION
        checker.check_model(model)
        payload: bytes = model.SerializeToString()
        return payload
