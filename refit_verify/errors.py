"""Typed errors. Each names the tensor (and block, where one is known) so a report can say where."""

from __future__ import annotations


class RefitVerifyError(Exception):
    """Base class for every error the harness raises on purpose."""


class BadInputError(RefitVerifyError, ValueError):
    """An input the harness cannot quantize or compare: wrong rank, dtype, device, block size."""

    def __init__(self, message: str, tensor: str | None = None):
        self.tensor = tensor
        super().__init__(f"{tensor}: {message}" if tensor else message)


class NonFiniteInputError(BadInputError):
    """A recipe with nan_policy='raise' met NaN/Inf; names the first offending block."""

    def __init__(self, tensor: str | None, block: tuple[int, int], element: tuple[int, int], value: float):
        self.block = block
        self.element = element
        self.value = value
        super().__init__(
            f"non-finite value {value} at element {element} in block {block}", tensor=tensor
        )


class RecipeFailure(RefitVerifyError):
    """The implementation a preset reproduces fails on this input (e.g. empty tensors).

    Kept apart from BadInputError: it is the real implementation's behaviour, reproduced,
    not the harness refusing the input.
    """

    def __init__(self, recipe: str, tensor: str | None, cause: BaseException):
        self.recipe = recipe
        self.tensor = tensor
        self.cause = cause
        super().__init__(
            f"{tensor or '<tensor>'}: recipe {recipe!r} fails as its implementation does: "
            f"{type(cause).__name__}: {cause}"
        )


class Fp8MismatchError(RefitVerifyError, AssertionError):
    """Bitwise comparison failed; carries the structured first mismatch."""

    def __init__(self, mismatch):
        self.mismatch = mismatch
        super().__init__(mismatch.describe())
