from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "labels", "reason", "framework", "created_at", "data_source", "live_accuracy", "outcomes", "stage")
    class LiveAccuracyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    LIVE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    framework: str
    created_at: str
    data_source: str
    live_accuracy: _containers.ScalarMap[str, float]
    outcomes: int
    stage: str
    def __init__(self, version: _Optional[str] = ..., state: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., framework: _Optional[str] = ..., created_at: _Optional[str] = ..., data_source: _Optional[str] = ..., live_accuracy: _Optional[_Mapping[str, float]] = ..., outcomes: _Optional[int] = ..., stage: _Optional[str] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "versions", "labels", "split", "keep_latest", "policy_error", "shadow", "pinned")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SplitEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    KEEP_LATEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_ERROR_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    labels: _containers.ScalarMap[str, str]
    split: _containers.ScalarMap[str, float]
    keep_latest: int
    policy_error: str
    shadow: _containers.RepeatedCompositeFieldContainer[ShadowComparison]
    pinned: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., split: _Optional[_Mapping[str, float]] = ..., keep_latest: _Optional[int] = ..., policy_error: _Optional[str] = ..., shadow: _Optional[_Iterable[_Union[ShadowComparison, _Mapping]]] = ..., pinned: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("changed", "models")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, changed: _Optional[bool] = ..., models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("model", "label", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    label: str
    version: str
    def __init__(self, model: _Optional[str] = ..., label: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("model", "label")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    label: str
    def __init__(self, model: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class RemoveLabelRequest(_message.Message):
    __slots__ = ("model", "label")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    label: str
    def __init__(self, model: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class SetSplitRequest(_message.Message):
    __slots__ = ("model", "weights")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: _containers.ScalarMap[str, float]
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SetStageRequest(_message.Message):
    __slots__ = ("model", "version", "stage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    stage: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[str] = ...) -> None: ...

class ShadowStatsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ShadowComparison(_message.Message):
    __slots__ = ("model", "candidate", "champion", "outcomes", "mean_difference", "variance_difference", "both_right", "only_champion_right", "only_candidate_right", "both_wrong", "shadowed", "skipped", "failed", "unmatched")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    MEAN_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    BOTH_RIGHT_FIELD_NUMBER: _ClassVar[int]
    ONLY_CHAMPION_RIGHT_FIELD_NUMBER: _ClassVar[int]
    ONLY_CANDIDATE_RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTH_WRONG_FIELD_NUMBER: _ClassVar[int]
    SHADOWED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_FIELD_NUMBER: _ClassVar[int]
    model: str
    candidate: str
    champion: str
    outcomes: int
    mean_difference: float
    variance_difference: float
    both_right: int
    only_champion_right: int
    only_candidate_right: int
    both_wrong: int
    shadowed: int
    skipped: int
    failed: int
    unmatched: int
    def __init__(self, model: _Optional[str] = ..., candidate: _Optional[str] = ..., champion: _Optional[str] = ..., outcomes: _Optional[int] = ..., mean_difference: _Optional[float] = ..., variance_difference: _Optional[float] = ..., both_right: _Optional[int] = ..., only_champion_right: _Optional[int] = ..., only_candidate_right: _Optional[int] = ..., both_wrong: _Optional[int] = ..., shadowed: _Optional[int] = ..., skipped: _Optional[int] = ..., failed: _Optional[int] = ..., unmatched: _Optional[int] = ...) -> None: ...

class ShadowStatsResponse(_message.Message):
    __slots__ = ("comparisons",)
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    comparisons: _containers.RepeatedCompositeFieldContainer[ShadowComparison]
    def __init__(self, comparisons: _Optional[_Iterable[_Union[ShadowComparison, _Mapping]]] = ...) -> None: ...
