"""The ``file_filters`` and ``schema_mapping`` parts of a sync configuration.

Pure, frozen pydantic models: validation only, no I/O. Limits are pydantic field constraints,
so a violation's error ``type``/``ctx`` carry the limit; cross-field rules raise ``ValueError``
naming the fields involved.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal, Self, TypeAlias

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

__all__ = [
    "MAX_FILTER_PATTERNS",
    "MAX_MAPPINGS",
    "MAX_PATTERN_LENGTH",
    "MAX_TARGET_FIELD_LENGTH",
    "MIME_TYPE_PATTERN",
    "TARGET_FIELD_PATTERN",
    "BlobMapping",
    "BlobType",
    "ColumnSource",
    "ConstantSource",
    "DrivePropertySource",
    "FieldMapping",
    "FieldTransform",
    "FileFilters",
    "FileSource",
    "FilenameRegexSource",
    "FolderPathSource",
    "JsonScalar",
    "MappingEntry",
    "MetadataFilter",
    "MetadataFilterOperator",
    "MetadataSource",
    "SchemaMapping",
    "Source",
    "TagSource",
]

#: At most this many patterns in each of ``include_patterns`` and ``exclude_patterns``.
MAX_FILTER_PATTERNS = 100
#: At most this many characters in one glob pattern.
MAX_PATTERN_LENGTH = 1024
#: At most this many entries in ``SchemaMapping.mappings``.
MAX_MAPPINGS = 200
#: At most this many characters in a target field name.
MAX_TARGET_FIELD_LENGTH = 128

#: ``type/subtype`` (RFC 6838 restricted names); the subtype may be ``*`` (e.g. ``image/*``).
MIME_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/(?:\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*)$"
#: A target field name: an identifier.
TARGET_FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: A JSON scalar other than null: bool, int, finite float or str (no coercion between them).
JsonScalar: TypeAlias = (
    StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictStr
)

_Pattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_LENGTH)]
_MimeType = Annotated[str, Field(pattern=MIME_TYPE_PATTERN)]
_NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
_TargetField = Annotated[
    str, Field(max_length=MAX_TARGET_FIELD_LENGTH, pattern=TARGET_FIELD_PATTERN)
]


# --------------------------------------------------------------------------- file_filters


class MetadataFilterOperator(StrEnum):
    """How a ``MetadataFilter`` compares a file's metadata field with its value."""

    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    GT = "gt"
    LT = "lt"
    GTE = "gte"
    LTE = "lte"
    EXISTS = "exists"


class MetadataFilter(BaseModel):
    """One condition on a file's metadata: ``field`` ``operator`` ``value``.

    ``value`` is required (not null) for every operator except ``exists``, which takes no
    value (null or omitted).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(min_length=1, max_length=256)
    operator: MetadataFilterOperator
    value: JsonScalar | None = None

    @model_validator(mode="after")
    def _value_matches_operator(self) -> Self:
        if self.operator is MetadataFilterOperator.EXISTS:
            if self.value is not None:
                raise ValueError("value must be null or omitted when operator is 'exists'")
        elif self.value is None:
            raise ValueError(f"value is required when operator is '{self.operator.value}'")
        return self


class FileFilters(BaseModel):
    """Which files of the source a sync takes.

    Every rule that is set must hold: the rules combine with AND (an empty list or a null
    bound imposes nothing). A file must match at least one ``include_patterns`` glob (when
    any are given), no ``exclude_patterns`` glob, the size bounds (inclusive), the
    modification-time bounds, one of ``mime_types`` (when any are given) and every
    ``metadata_filters`` condition.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    include_patterns: list[_Pattern] = Field(default_factory=list, max_length=MAX_FILTER_PATTERNS)
    exclude_patterns: list[_Pattern] = Field(default_factory=list, max_length=MAX_FILTER_PATTERNS)
    min_size_bytes: _NonNegativeInt | None = None
    max_size_bytes: _NonNegativeInt | None = None
    modified_after: AwareDatetime | None = None
    modified_before: AwareDatetime | None = None
    mime_types: list[_MimeType] = Field(default_factory=list)
    metadata_filters: list[MetadataFilter] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> Self:
        if (
            self.min_size_bytes is not None
            and self.max_size_bytes is not None
            and self.min_size_bytes > self.max_size_bytes
        ):
            raise ValueError(
                "min_size_bytes must be <= max_size_bytes "
                f"(got {self.min_size_bytes} > {self.max_size_bytes})"
            )
        if (
            self.modified_after is not None
            and self.modified_before is not None
            and self.modified_after >= self.modified_before
        ):
            raise ValueError(
                "modified_after must be earlier than modified_before "
                f"(got {self.modified_after.isoformat()} >= "
                f"{self.modified_before.isoformat()})"
            )
        return self


# --------------------------------------------------------------------------- sources


class TagSource(BaseModel):
    """The value of the file's tag ``key``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["tag"] = "tag"
    key: str = Field(min_length=1, max_length=128)


class MetadataSource(BaseModel):
    """The value of the file's metadata ``key``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["metadata"] = "metadata"
    key: str = Field(min_length=1, max_length=1024)


class FilenameRegexSource(BaseModel):
    """The single capturing group of ``pattern`` matched on the file name, else ``default``.

    ``pattern`` must compile with Python's ``re`` and have exactly one capturing group.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["filename_regex"] = "filename_regex"
    pattern: str
    default: str | None = None

    @field_validator("pattern")
    @classmethod
    def _one_capturing_group(cls, pattern: str) -> str:
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc
        except (RecursionError, OverflowError) as exc:  # nested too deep, or a huge {n}
            raise ValueError(f"pattern is too complex to compile: {exc}") from exc
        if groups != 1:
            raise ValueError(f"pattern must have exactly one capturing group, found {groups}")
        return pattern


class ColumnSource(BaseModel):
    """The value of column ``name`` (tabular sources)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["column"] = "column"
    name: str = Field(min_length=1)


class DrivePropertySource(BaseModel):
    """The value of the drive property ``key`` (drive-like sources)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["drive_property"] = "drive_property"
    key: str = Field(min_length=1)


class FolderPathSource(BaseModel):
    """The file's folder path: segment ``segment`` (0-based), or the whole path if ``full_path``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["folder_path"] = "folder_path"
    segment: _NonNegativeInt | None = None
    full_path: StrictBool = False


class FileSource(BaseModel):
    """The file itself (its content)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["file"] = "file"


class ConstantSource(BaseModel):
    """A fixed JSON scalar ``value``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["constant"] = "constant"
    value: JsonScalar


#: Where a mapped value comes from; discriminated on ``type``.
Source: TypeAlias = Annotated[
    TagSource
    | MetadataSource
    | FilenameRegexSource
    | ColumnSource
    | DrivePropertySource
    | FolderPathSource
    | FileSource
    | ConstantSource,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- mappings


class FieldTransform(StrEnum):
    """A transform applied to a source value before it is stored in a field."""

    LOWERCASE = "lowercase"
    UPPERCASE = "uppercase"
    TRIM = "trim"
    JSON_PARSE = "json_parse"


class BlobType(StrEnum):
    """The kind of blob a ``BlobMapping`` produces (``auto``: detected from the file)."""

    AUTO = "auto"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    TEXT = "text"
    PDF = "pdf"
    EXCEL = "excel"


class FieldMapping(BaseModel):
    """Store ``source`` (optionally transformed) in a schema field; ``required``: must be found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_type: Literal["field"] = "field"
    source: Source
    transform: FieldTransform | None = None
    required: StrictBool = False


class BlobMapping(BaseModel):
    """Store ``source`` as a blob of ``blob_type``, optionally under ``blob_property``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_type: Literal["blob"] = "blob"
    source: Source
    blob_type: BlobType = BlobType.AUTO
    blob_property: str | None = Field(default=None, min_length=1)
    mime_type_override: _MimeType | None = None


#: One mapping; discriminated on ``target_type``.
MappingEntry: TypeAlias = Annotated[FieldMapping | BlobMapping, Field(discriminator="target_type")]


class SchemaMapping(BaseModel):
    """How source attributes map to bucket schema fields: target field name -> entry.

    Target names are identifiers (``[A-Za-z_][A-Za-z0-9_]*``, at most 128 characters);
    1 to ``MAX_MAPPINGS`` entries.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mappings: dict[_TargetField, MappingEntry] = Field(min_length=1, max_length=MAX_MAPPINGS)
