"""User-facing errors: one line that says what is wrong and what to do."""


class EdgeSRError(Exception):
    """An error caused by the user's input, reported without a traceback."""


class MissingDependencyError(EdgeSRError):
    def __init__(self, package: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed; "
            f"install it with: pip install {package}"
        )
