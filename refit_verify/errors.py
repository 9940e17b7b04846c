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


class TransportError(RefitVerifyError):
    """The packed transport refused or lost a tensor; names it (and the bucket, where known)."""

    def __init__(self, message: str, tensor: str | None = None, bucket: int | None = None):
        self.tensor = tensor
        self.bucket = bucket
        where = tensor or "<transport>"
        if bucket is not None:
            where += f" (bucket {bucket})"
        super().__init__(f"{where}: {message}")


class NonContiguousTensorError(TransportError):
    """`t.view(torch.uint8).view(-1)` needs a contiguous tensor (FACTS.md §3, cropped views)."""


class OversizedTensorError(TransportError):
    """A tensor larger than one bucket cannot be packed."""


class LoadError(RefitVerifyError):
    """The engine-side loader could not place a tensor; names tensor, shard and block rows."""

    def __init__(self, message: str, tensor: str | None = None, shard=None):
        self.tensor = tensor
        self.shard = shard
        where = tensor or "<loader>"
        if shard is not None:
            where += f" [shard {shard!r}]"
        super().__init__(f"{where}: {message}")


class ShardPlacementError(LoadError):
    """vLLM's block-rounded scale placement ran off the end of the fused scale (torch narrow)."""


class LoadShapeError(LoadError):
    """An arrived tensor's shape does not match the engine parameter (or shard) it targets."""


class ShapeValidationError(LoadError):
    """vLLM's create-time check: output partitions except the last must be block multiples."""


class Terminated(BaseException):
    """SIGTERM (CI cancel, timeout): unwinds like KeyboardInterrupt so the report is finished."""
