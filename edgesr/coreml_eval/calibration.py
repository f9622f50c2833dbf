"""W8A8 on Linux: coremltools' activation calibration with the reference evaluator.

``coremltools.optimize.coreml.linear_quantize_activations`` measures activation
ranges by running the model with ``MLModel.predict`` (macOS only). Inside
``reference_calibration()`` that one call (``ModelDebugger.predict_intermediate_outputs``)
is answered by the numpy evaluator instead, so W8A8 programs can be made, and then
checked, on Linux::

    from edgesr.coreml_eval.calibration import reference_calibration
    with reference_calibration():
        quantized = cto.linear_quantize_activations(mlmodel, config, samples)

The ranges are those of the reference evaluation of the ML program (not Apple's
runtime), which agrees with it to parity tolerance.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def reference_calibration() -> Iterator[None]:
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil
    from coremltools.optimize.coreml.experimental import _model_debugger

    from edgesr.coreml_eval.evaluator import ProgramEvaluator

    debugger_class = _model_debugger.ModelDebugger
    original = debugger_class.predict_intermediate_outputs
    compiled: dict[int, ProgramEvaluator] = {}

    def predict_intermediate_outputs(self, inputs, intermediate_output_names, compute_units=None):
        key = id(self)
        if key not in compiled:
            spec = self.model_info.spec
            program = load_mil(spec, spec.specificationVersion, str(self.weights_dir or ""))
            name = spec.description.defaultFunctionName or "main"
            compiled[key] = ProgramEvaluator(program, name)
        evaluator = compiled[key]
        feeds = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
        values = evaluator.run(feeds, keep_intermediates=True)
        wanted = list(intermediate_output_names) + list(evaluator.output_names)
        return {name: values[name] for name in wanted if name in values}

    debugger_class.predict_intermediate_outputs = predict_intermediate_outputs
    try:
        yield
    finally:
        debugger_class.predict_intermediate_outputs = original
