"""Limits, cross-field rules, unions and round-trips of ``statemachine.filters``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from statemachine.filters import (
    MAX_FILTER_PATTERNS,
    MAX_MAPPINGS,
    MAX_PATTERN_LENGTH,
    MAX_TARGET_FIELD_LENGTH,
    BlobMapping,
    BlobType,
    ColumnSource,
    ConstantSource,
    DrivePropertySource,
    FieldMapping,
    FieldTransform,
    FileFilters,
    FilenameRegexSource,
    FileSource,
    FolderPathSource,
    MetadataFilter,
    MetadataFilterOperator,
    MetadataSource,
    SchemaMapping,
    Source,
    TagSource,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def errors_of(model: type[BaseModel], data: Any) -> list[dict[str, Any]]:
    """Validate ``data`` expecting failure; return pydantic's error list."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [dict(e) for e in info.value.errors(include_url=False)]


def only_error(model: type[BaseModel], data: Any) -> dict[str, Any]:
    errs = errors_of(model, data)
    assert len(errs) == 1, errs
    return errs[0]


def mapping_with_source(source: dict[str, Any]) -> dict[str, Any]:
    return {"mappings": {"f": {"target_type": "field", "source": source}}}


# --------------------------------------------------------------------------- MetadataFilter


@pytest.mark.parametrize("length", [1, 256])
def test_metadata_filter_field_length_accepted_at_bounds(length: int) -> None:
    f = MetadataFilter.model_validate({"field": "x" * length, "operator": "equals", "value": 1})
    assert len(f.field) == length


@pytest.mark.parametrize(
    ("length", "err_type", "ctx"),
    [(0, "string_too_short", {"min_length": 1}), (257, "string_too_long", {"max_length": 256})],
)
def test_metadata_filter_field_length_rejected_past_bounds(
    length: int, err_type: str, ctx: dict[str, int]
) -> None:
    err = only_error(MetadataFilter, {"field": "x" * length, "operator": "equals", "value": 1})
    assert err["type"] == err_type
    assert err["loc"] == ("field",)
    assert err["ctx"] == ctx


@pytest.mark.parametrize(
    "operator", [op for op in MetadataFilterOperator if op is not MetadataFilterOperator.EXISTS]
)
def test_value_required_unless_exists(operator: MetadataFilterOperator) -> None:
    ok = MetadataFilter.model_validate({"field": "a", "operator": operator.value, "value": "v"})
    assert ok.operator is operator
    for data in (
        {"field": "a", "operator": operator.value},
        {"field": "a", "operator": operator.value, "value": None},
    ):
        err = only_error(MetadataFilter, data)
        assert err["type"] == "value_error"
        assert f"value is required when operator is '{operator.value}'" in err["msg"]


def test_exists_takes_no_value() -> None:
    assert MetadataFilter(field="a", operator=MetadataFilterOperator.EXISTS).value is None
    err = only_error(MetadataFilter, {"field": "a", "operator": "exists", "value": True})
    assert "value must be null or omitted when operator is 'exists'" in err["msg"]


def test_operator_values_are_the_documented_nine() -> None:
    assert {op.value for op in MetadataFilterOperator} == {
        "equals",
        "not_equals",
        "contains",
        "not_contains",
        "gt",
        "lt",
        "gte",
        "lte",
        "exists",
    }


def test_unknown_operator_rejected() -> None:
    err = only_error(MetadataFilter, {"field": "a", "operator": "like", "value": "x"})
    assert err["type"] == "enum"
    assert err["loc"] == ("operator",)


@pytest.mark.parametrize("value", [True, False, 0, -7, 1.5, "", "text"])
def test_scalar_values_keep_their_type(value: object) -> None:
    f = MetadataFilter.model_validate({"field": "a", "operator": "equals", "value": value})
    assert f.value == value
    assert type(f.value) is type(value)


@pytest.mark.parametrize("value", [[1], {"a": 1}, math.inf, -math.inf, math.nan, b"x"])
def test_non_scalar_values_rejected(value: object) -> None:
    errs = errors_of(MetadataFilter, {"field": "a", "operator": "equals", "value": value})
    assert all(e["loc"][0] == "value" for e in errs)


# --------------------------------------------------------------------------- FileFilters


def test_file_filters_defaults_impose_nothing() -> None:
    f = FileFilters()
    assert f.include_patterns == [] and f.exclude_patterns == []
    assert f.mime_types == [] and f.metadata_filters == []
    assert f.min_size_bytes is None and f.max_size_bytes is None
    assert f.modified_after is None and f.modified_before is None
    assert FileFilters().include_patterns is not f.include_patterns  # no shared default


@pytest.mark.parametrize("field", ["include_patterns", "exclude_patterns"])
def test_pattern_count_accepted_at_bound(field: str) -> None:
    f = FileFilters.model_validate({field: ["*.pdf"] * MAX_FILTER_PATTERNS})
    assert len(getattr(f, field)) == MAX_FILTER_PATTERNS == 100


@pytest.mark.parametrize("field", ["include_patterns", "exclude_patterns"])
def test_pattern_count_rejected_past_bound(field: str) -> None:
    err = only_error(FileFilters, {field: ["*.pdf"] * (MAX_FILTER_PATTERNS + 1)})
    assert err["type"] == "too_long"
    assert err["loc"] == (field,)
    assert err["ctx"]["max_length"] == 100


@pytest.mark.parametrize("field", ["include_patterns", "exclude_patterns"])
@pytest.mark.parametrize("length", [1, MAX_PATTERN_LENGTH])
def test_pattern_length_accepted_at_bounds(field: str, length: int) -> None:
    f = FileFilters.model_validate({field: ["*" * length]})
    assert getattr(f, field) == ["*" * length]


@pytest.mark.parametrize("field", ["include_patterns", "exclude_patterns"])
@pytest.mark.parametrize(
    ("length", "err_type", "ctx"),
    [(0, "string_too_short", {"min_length": 1}), (1025, "string_too_long", {"max_length": 1024})],
)
def test_pattern_length_rejected_past_bounds(
    field: str, length: int, err_type: str, ctx: dict[str, int]
) -> None:
    err = only_error(FileFilters, {field: ["ok/*", "*" * length]})
    assert err["type"] == err_type
    assert err["loc"] == (field, 1)
    assert err["ctx"] == ctx


@pytest.mark.parametrize("field", ["min_size_bytes", "max_size_bytes"])
def test_size_zero_accepted(field: str) -> None:
    assert getattr(FileFilters.model_validate({field: 0}), field) == 0


@pytest.mark.parametrize("field", ["min_size_bytes", "max_size_bytes"])
def test_size_negative_rejected(field: str) -> None:
    err = only_error(FileFilters, {field: -1})
    assert err["type"] == "greater_than_equal"
    assert err["loc"] == (field,)
    assert err["ctx"] == {"ge": 0}


@pytest.mark.parametrize("field", ["min_size_bytes", "max_size_bytes"])
@pytest.mark.parametrize("value", [True, "10", 10.0])
def test_size_must_be_a_real_int(field: str, value: object) -> None:
    err = only_error(FileFilters, {field: value})
    assert err["loc"] == (field,)
    assert err["type"] == "int_type"


def test_min_size_equal_to_max_accepted() -> None:
    f = FileFilters(min_size_bytes=10, max_size_bytes=10)
    assert (f.min_size_bytes, f.max_size_bytes) == (10, 10)


def test_min_size_above_max_rejected() -> None:
    err = only_error(FileFilters, {"min_size_bytes": 11, "max_size_bytes": 10})
    assert err["type"] == "value_error"
    assert "min_size_bytes must be <= max_size_bytes" in err["msg"]


@pytest.mark.parametrize(("lo", "hi"), [(None, 5), (5, None), (10**12, None)])
def test_one_sided_size_bound_accepted(lo: int | None, hi: int | None) -> None:
    f = FileFilters(min_size_bytes=lo, max_size_bytes=hi)
    assert (f.min_size_bytes, f.max_size_bytes) == (lo, hi)


@pytest.mark.parametrize("field", ["modified_after", "modified_before"])
@pytest.mark.parametrize("value", ["2024-01-01T00:00:00", datetime(2024, 1, 1)])  # noqa: DTZ001
def test_naive_datetime_rejected(field: str, value: object) -> None:
    err = only_error(FileFilters, {field: value})
    assert err["type"] == "timezone_aware"
    assert err["loc"] == (field,)


def test_aware_datetime_accepted_from_json_string() -> None:
    f = FileFilters.model_validate({"modified_after": "2024-01-01T02:00:00+02:00"})
    assert f.modified_after == T0
    assert f.modified_after is not None and f.modified_after.utcoffset() == timedelta(hours=2)


def test_modified_after_just_before_modified_before_accepted() -> None:
    f = FileFilters(modified_after=T0, modified_before=T0 + timedelta(microseconds=1))
    assert f.modified_after is not None and f.modified_before is not None
    assert f.modified_after < f.modified_before


@pytest.mark.parametrize(
    "before",
    [
        T0,  # equal
        T0 - timedelta(microseconds=1),  # earlier
        T0.astimezone(timezone(timedelta(hours=-5))),  # same instant, other offset
    ],
)
def test_modified_after_not_before_modified_before_rejected(before: datetime) -> None:
    err = only_error(FileFilters, {"modified_after": T0, "modified_before": before})
    assert err["type"] == "value_error"
    assert "modified_after must be earlier than modified_before" in err["msg"]


@pytest.mark.parametrize(
    "mime",
    ["image/*", "image/png", "application/vnd.ms-excel", "text/x-c++src", "Video/MP4"],
)
def test_mime_type_shape_accepted(mime: str) -> None:
    assert FileFilters(mime_types=[mime]).mime_types == [mime]


@pytest.mark.parametrize(
    "mime",
    ["", "image", "image/", "/png", "*/*", "*/png", "image/png/x", "image/ png", "image/png\n"],
)
def test_mime_type_shape_rejected(mime: str) -> None:
    err = only_error(FileFilters, {"mime_types": ["image/png", mime]})
    assert err["type"] == "string_pattern_mismatch"
    assert err["loc"] == ("mime_types", 1)


def test_metadata_filter_errors_are_located_in_the_list() -> None:
    errs = errors_of(FileFilters, {"metadata_filters": [{"field": "a", "operator": "gt"}]})
    assert [e["loc"] for e in errs] == [("metadata_filters", 0)]


def test_extra_field_forbidden() -> None:
    err = only_error(FileFilters, {"include_pattern": ["*"]})
    assert err["type"] == "extra_forbidden"
    assert err["loc"] == ("include_pattern",)


def test_frozen() -> None:
    f = FileFilters()
    with pytest.raises(ValidationError) as info:
        f.min_size_bytes = 3  # type: ignore[misc]
    assert info.value.errors()[0]["type"] == "frozen_instance"
    assert f.min_size_bytes is None


def test_file_filters_round_trip() -> None:
    f = FileFilters(
        include_patterns=["**/*.pdf", "docs/*"],
        exclude_patterns=["**/~*"],
        min_size_bytes=0,
        max_size_bytes=10_000_000,
        modified_after=T0,
        modified_before=datetime(
            2025, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))
        ),
        mime_types=["image/*", "application/pdf"],
        metadata_filters=[
            MetadataFilter(field="team", operator=MetadataFilterOperator.EQUALS, value="x"),
            MetadataFilter(field="rating", operator=MetadataFilterOperator.GTE, value=4.5),
            MetadataFilter(field="n", operator=MetadataFilterOperator.LT, value=3),
            MetadataFilter(field="flag", operator=MetadataFilterOperator.NOT_EQUALS, value=False),
            MetadataFilter(field="owner", operator=MetadataFilterOperator.EXISTS),
        ],
    )
    dumped = f.model_dump(mode="json")
    again = FileFilters.model_validate(dumped)
    assert again == f
    assert again.model_dump(mode="json") == dumped
    assert FileFilters.model_validate_json(f.model_dump_json()) == f


_scalars = (
    st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


@settings(database=None, max_examples=200)
@given(
    operator=st.sampled_from(
        [op for op in MetadataFilterOperator if op is not MetadataFilterOperator.EXISTS]
    ),
    value=_scalars,
)
def test_metadata_filter_round_trip_any_scalar(
    operator: MetadataFilterOperator, value: bool | int | float | str
) -> None:
    f = MetadataFilter(field="k", operator=operator, value=value)
    again = MetadataFilter.model_validate(f.model_dump(mode="json"))
    assert again == f
    assert type(again.value) is type(value)


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("kind", "field", "limit"),
    [("tag", "key", 128), ("metadata", "key", 1024)],
)
def test_key_length_accepted_at_bounds(kind: str, field: str, limit: int) -> None:
    for length in (1, limit):
        m = SchemaMapping.model_validate(mapping_with_source({"type": kind, field: "k" * length}))
        entry = m.mappings["f"]
        assert getattr(entry.source, field) == "k" * length


@pytest.mark.parametrize(
    ("kind", "field", "length", "err_type", "ctx"),
    [
        ("tag", "key", 0, "string_too_short", {"min_length": 1}),
        ("tag", "key", 129, "string_too_long", {"max_length": 128}),
        ("metadata", "key", 0, "string_too_short", {"min_length": 1}),
        ("metadata", "key", 1025, "string_too_long", {"max_length": 1024}),
        ("column", "name", 0, "string_too_short", {"min_length": 1}),
        ("drive_property", "key", 0, "string_too_short", {"min_length": 1}),
    ],
)
def test_source_string_rejected_past_bounds(
    kind: str, field: str, length: int, err_type: str, ctx: dict[str, int]
) -> None:
    err = only_error(SchemaMapping, mapping_with_source({"type": kind, field: "k" * length}))
    assert err["type"] == err_type
    assert err["loc"] == ("mappings", "f", "field", "source", kind, field)
    assert err["ctx"] == ctx


@pytest.mark.parametrize("segment", [0, 7, None])
def test_folder_path_segment_accepted(segment: int | None) -> None:
    src = FolderPathSource.model_validate({"segment": segment})
    assert src.segment == segment
    assert src.full_path is False


def test_folder_path_negative_segment_rejected() -> None:
    err = only_error(FolderPathSource, {"segment": -1})
    assert err["type"] == "greater_than_equal"
    assert err["ctx"] == {"ge": 0}


def test_file_source_has_no_fields() -> None:
    assert FileSource().model_dump() == {"type": "file"}
    err = only_error(FileSource, {"type": "file", "key": "x"})
    assert err["type"] == "extra_forbidden"


@pytest.mark.parametrize("value", [True, 3, 2.5, "const"])
def test_constant_accepts_scalars(value: object) -> None:
    src = ConstantSource.model_validate({"value": value})
    assert src.value == value and type(src.value) is type(value)


@pytest.mark.parametrize("data", [{}, {"value": None}, {"value": [1]}, {"value": {"a": 1}}])
def test_constant_rejects_missing_null_and_containers(data: dict[str, Any]) -> None:
    errs = errors_of(ConstantSource, data)
    assert all(e["loc"][0] == "value" for e in errs)


@pytest.mark.parametrize(
    "pattern",
    [r"^(\d+)_", r"(?P<year>\d{4})", r"(?:a|b)(c)", r"(\w+)\.(?:pdf|png)$", r"\((x)\)"],
)
def test_filename_regex_one_group_accepted(pattern: str) -> None:
    assert FilenameRegexSource(pattern=pattern).pattern == pattern


@pytest.mark.parametrize(
    ("pattern", "found"),
    [(r"abc", 0), (r"(?:abc)", 0), (r"\(abc\)", 0), (r"(a)(b)", 2), (r"((a)b)", 2)],
)
def test_filename_regex_wrong_group_count_rejected(pattern: str, found: int) -> None:
    err = only_error(FilenameRegexSource, {"pattern": pattern})
    assert err["type"] == "value_error"
    assert err["loc"] == ("pattern",)
    assert f"pattern must have exactly one capturing group, found {found}" in err["msg"]


@pytest.mark.parametrize("pattern", ["(", "(a", "([a-)", "(?P<x>a)(?P<x>b)"])
def test_filename_regex_invalid_rejected(pattern: str) -> None:
    err = only_error(FilenameRegexSource, {"pattern": pattern})
    assert err["loc"] == ("pattern",)
    assert "pattern is not a valid regular expression" in err["msg"]


def test_unknown_source_type_rejected_with_loc() -> None:
    err = only_error(SchemaMapping, mapping_with_source({"type": "header", "key": "x"}))
    assert err["type"] == "union_tag_invalid"
    assert err["loc"] == ("mappings", "f", "field", "source")
    assert err["ctx"]["tag"] == "header"
    assert "'filename_regex'" in err["ctx"]["expected_tags"]


def test_missing_source_type_rejected_with_loc() -> None:
    err = only_error(SchemaMapping, mapping_with_source({"key": "x"}))
    assert err["type"] == "union_tag_not_found"
    assert err["loc"] == ("mappings", "f", "field", "source")


# --------------------------------------------------------------------------- mappings


def test_unknown_target_type_rejected_with_loc() -> None:
    data = {"mappings": {"f": {"target_type": "column", "source": {"type": "file"}}}}
    err = only_error(SchemaMapping, data)
    assert err["type"] == "union_tag_invalid"
    assert err["loc"] == ("mappings", "f")
    assert err["ctx"]["tag"] == "column"
    assert err["ctx"]["expected_tags"] == "'field', 'blob'"


def test_missing_target_type_rejected_with_loc() -> None:
    err = only_error(SchemaMapping, {"mappings": {"f": {"source": {"type": "file"}}}})
    assert err["type"] == "union_tag_not_found"
    assert err["loc"] == ("mappings", "f")


def test_field_mapping_defaults_and_transform() -> None:
    m = SchemaMapping.model_validate(mapping_with_source({"type": "tag", "key": "k"}))
    entry = m.mappings["f"]
    assert isinstance(entry, FieldMapping)
    assert isinstance(entry.source, TagSource)
    assert entry.transform is None and entry.required is False
    with_transform = FieldMapping.model_validate(
        {"source": {"type": "file"}, "transform": "json_parse", "required": True}
    )
    assert with_transform.transform is FieldTransform.JSON_PARSE
    assert with_transform.required is True


def test_field_mapping_unknown_transform_rejected() -> None:
    err = only_error(FieldMapping, {"source": {"type": "file"}, "transform": "titlecase"})
    assert err["type"] == "enum"
    assert err["loc"] == ("transform",)


def test_field_mapping_has_no_blob_fields() -> None:
    err = only_error(FieldMapping, {"source": {"type": "file"}, "blob_type": "image"})
    assert err["type"] == "extra_forbidden"


def test_blob_mapping_defaults() -> None:
    b = BlobMapping.model_validate({"source": {"type": "file"}})
    assert b.target_type == "blob"
    assert b.blob_type is BlobType.AUTO
    assert b.blob_property is None and b.mime_type_override is None


def test_blob_types_are_the_documented_seven() -> None:
    assert {t.value for t in BlobType} == {
        "auto",
        "image",
        "video",
        "audio",
        "text",
        "pdf",
        "excel",
    }


@pytest.mark.parametrize(
    ("data", "loc", "err_type"),
    [
        ({"blob_type": "spreadsheet"}, ("blob_type",), "enum"),
        ({"mime_type_override": "pdf"}, ("mime_type_override",), "string_pattern_mismatch"),
        ({"blob_property": ""}, ("blob_property",), "string_too_short"),
        ({"transform": "trim"}, ("transform",), "extra_forbidden"),
    ],
)
def test_blob_mapping_rejections(data: dict[str, Any], loc: tuple[str, ...], err_type: str) -> None:
    err = only_error(BlobMapping, {"source": {"type": "file"}, **data})
    assert err["loc"] == loc
    assert err["type"] == err_type


def test_blob_mapping_mime_override_accepted() -> None:
    b = BlobMapping.model_validate(
        {"source": {"type": "file"}, "mime_type_override": "application/pdf"}
    )
    assert b.mime_type_override == "application/pdf"


# --------------------------------------------------------------------------- SchemaMapping


def _n_mappings(n: int) -> dict[str, Any]:
    return {
        "mappings": {
            f"f{i}": {"target_type": "field", "source": {"type": "file"}} for i in range(n)
        }
    }


@pytest.mark.parametrize("n", [1, MAX_MAPPINGS])
def test_mapping_count_accepted_at_bounds(n: int) -> None:
    assert len(SchemaMapping.model_validate(_n_mappings(n)).mappings) == n


@pytest.mark.parametrize(
    ("n", "err_type", "ctx_key", "limit"),
    [(0, "too_short", "min_length", 1), (MAX_MAPPINGS + 1, "too_long", "max_length", 200)],
)
def test_mapping_count_rejected_past_bounds(
    n: int, err_type: str, ctx_key: str, limit: int
) -> None:
    err = only_error(SchemaMapping, _n_mappings(n))
    assert err["type"] == err_type
    assert err["loc"] == ("mappings",)
    assert err["ctx"][ctx_key] == limit


def test_mappings_required() -> None:
    err = only_error(SchemaMapping, {})
    assert err["type"] == "missing"
    assert err["loc"] == ("mappings",)


@pytest.mark.parametrize("name", ["a", "_", "_private", "Field_1", "x" * MAX_TARGET_FIELD_LENGTH])
def test_target_field_name_accepted(name: str) -> None:
    m = SchemaMapping.model_validate(
        {"mappings": {name: {"target_type": "field", "source": {"type": "file"}}}}
    )
    assert list(m.mappings) == [name]


@pytest.mark.parametrize(
    ("name", "err_type"),
    [
        ("", "string_pattern_mismatch"),
        ("1a", "string_pattern_mismatch"),
        ("a-b", "string_pattern_mismatch"),
        ("a b", "string_pattern_mismatch"),
        ("a.b", "string_pattern_mismatch"),
        ("a\n", "string_pattern_mismatch"),
        ("é", "string_pattern_mismatch"),
        ("x" * (MAX_TARGET_FIELD_LENGTH + 1), "string_too_long"),
    ],
)
def test_target_field_name_rejected(name: str, err_type: str) -> None:
    data = {
        "mappings": {
            "ok": {"target_type": "field", "source": {"type": "file"}},
            name: {"target_type": "field", "source": {"type": "file"}},
        }
    }
    err = only_error(SchemaMapping, data)
    assert err["type"] == err_type
    assert err["loc"] == ("mappings", name, "[key]")


def test_schema_mapping_round_trip_every_source_and_entry() -> None:
    sources: list[Source] = [
        TagSource(key="project"),
        MetadataSource(key="x-amz-meta-owner"),
        FilenameRegexSource(pattern=r"^(\d{4})-", default="unknown"),
        FilenameRegexSource(pattern=r"(?P<id>[a-z]+)"),
        ColumnSource(name="SKU"),
        DrivePropertySource(key="starred"),
        FolderPathSource(segment=2),
        FolderPathSource(full_path=True),
        FileSource(),
        ConstantSource(value="catalog"),
        ConstantSource(value=1.25),
        ConstantSource(value=False),
    ]
    mappings: dict[str, FieldMapping | BlobMapping] = {
        f"field_{i}": FieldMapping(source=s, transform=t, required=i % 2 == 0)
        for i, (s, t) in enumerate(zip(sources, [*FieldTransform, None] * 4, strict=False))
    }
    mappings["content"] = BlobMapping(
        source=FileSource(),
        blob_type=BlobType.PDF,
        blob_property="document",
        mime_type_override="application/pdf",
    )
    mappings["thumb"] = BlobMapping(source=MetadataSource(key="thumbnail_url"))
    m = SchemaMapping(mappings=mappings)

    dumped = m.model_dump(mode="json")
    again = SchemaMapping.model_validate(dumped)
    assert again == m
    assert again.model_dump(mode="json") == dumped
    assert SchemaMapping.model_validate_json(m.model_dump_json()) == m
    assert [type(e.source) for e in again.mappings.values()] == [
        type(e.source) for e in m.mappings.values()
    ]
    assert dumped["mappings"]["content"]["target_type"] == "blob"
    assert dumped["mappings"]["field_8"]["source"] == {"type": "file"}
