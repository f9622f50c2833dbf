"""Graph rewrites that keep the maths and make a model exportable and fast.

Each rewrite is a pure function ``nn.Module -> nn.Module`` (it returns a new module
and leaves its input untouched) with a parity test; ``prepare_for_export`` picks
the ones a target and input shape need.
"""
from edgesr.rewrite.plan import ExportContext, Rewrite, prepare_for_export, register_rewrite

__all__ = ["ExportContext", "Rewrite", "prepare_for_export", "register_rewrite"]
