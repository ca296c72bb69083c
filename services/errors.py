"""Domain errors, each carrying the gRPC status it maps to. Servicers raise these; one decorator in
servicers.py turns them into statuses, so no servicer builds a status by hand."""

from __future__ import annotations

import grpc

SHOWN_CHARS = 64  # of a caller's name or value echoed in a message: gRPC's status travels in metadata (8 KiB)


def shown(value: str | bytes) -> str:
    """`value` as an error message quotes it, cut to SHOWN_CHARS: an echoed megabyte name would not fit in the
    status details, and the caller would get RESOURCE_EXHAUSTED instead of the message."""
    text = repr(value[:SHOWN_CHARS])
    return text if len(value) <= SHOWN_CHARS else f"{text}... ({len(value)} long)"


class InferenceError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidInput(InferenceError):
    """The request is malformed: the message names the field and what was expected."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(InferenceError):
    code = grpc.StatusCode.NOT_FOUND


class ModelNotReady(InferenceError):
    """The model is known but no valid version of it is loaded."""

    code = grpc.StatusCode.UNAVAILABLE


class PredictionNotFound(InferenceError):
    """ReportOutcome names a prediction the server does not remember (unknown, or evicted as too old)."""

    code = grpc.StatusCode.NOT_FOUND


class DeadlineExpired(InferenceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NonFiniteOutput(InferenceError):
    """A model version gave a NaN or infinite value for some items: never answered as OK."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, model: str, version: str, items: list[int], outputs: list[str]):
        shown = ", ".join(map(str, items[:20])) + (", ..." if len(items) > 20 else "")
        super().__init__(f"{model} v{version}: the model gave a non-finite output ({', '.join(outputs)}) for "
                         f"item(s) {shown} of this call; no answer is given")
        self.model, self.version, self.items = model, version, items


class VersionRefused(Exception):
    """A model version failed verification; the message says why. It never serves."""
