"""Which tracker wrote a file: gzip and zip unpacked within bounds, then the format by shape."""

from __future__ import annotations

import csv
import gzip
import io
import json
import typing
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planher.config import IMPORT_MAX_COMPRESSION_RATIO, IMPORT_MAX_JSON_BYTES
from planher.importers.apple_health import read_apple_health_xml
from planher.importers.clue import read_clue_backup, read_clue_measurements
from planher.importers.drip import read_drip_csv
from planher.importers.flo import read_flo
from planher.importers.history import FileTooLarge, ImportedHistory, MalformedFile, UnknownFormat
from planher.importers.mensinator import read_mensinator
from planher.importers.periodical import read_periodical
from planher.importers.planher_export import read_planher_export
from planher.schemas.responses import ImportFormat


class BoundedReader(io.RawIOBase):
    """A stream that refuses to yield more than `limit` bytes (FileTooLarge): what bounds a
    decompressed member, whatever its header claims."""

    def __init__(self, stream: typing.BinaryIO, limit: int) -> None:
        self.stream, self.remaining = stream, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.stream.read(len(buffer))
        self.remaining -= len(chunk)
        if self.remaining < 0:
            raise FileTooLarge()
        buffer[: len(chunk)] = chunk
        return len(chunk)


GZIP_MAGIC, ZIP_MAGIC = b"\x1f\x8b", b"PK\x03\x04"
APPLE_COMPANION_XML = "export_cda.xml"  # Apple's clinical document, beside export.xml

JSON_READERS: dict[str, Callable[[Any], ImportedHistory]] = {
    "planher": read_planher_export,
    "clue": read_clue_measurements,
    "clue_backup": read_clue_backup,
    "flo": read_flo,
    "mensinator": read_mensinator,
    "periodical": read_periodical,
}
assert set(JSON_READERS) | {"drip", "apple_health"} == set(typing.get_args(ImportFormat))


def mensinator_shaped(data: dict) -> bool:
    """Mensinator's tables: `periods` of bleeding days (`date`, `period_id`) beside its
    symptom tables. Another app's `{"periods": [{start_date, end_date}], "symptoms"}` is not
    one (a real file that calls itself a Flo export has that shape)."""
    periods = data.get("periods")
    if not isinstance(periods, list) or not data.keys() & {
        "symptom_date",
        "app_settings",
        "symptoms",
    }:
        return False
    if data.keys() & {"symptom_date", "app_settings"}:
        return True
    return not periods or (isinstance(periods[0], dict) and "date" in periods[0])


def json_format(data: Any) -> str | None:
    """Which tracker wrote this JSON, by its shape."""
    if isinstance(data, dict):
        if {"user", "periods", "moods"} <= data.keys():
            return "planher"
        if "operationalData" in data:
            return "flo"
        if mensinator_shaped(data):
            return "mensinator"
        if isinstance(data.get("data"), list) and data.keys() & {"settings", "environment"}:
            return "clue_backup"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "version" in data[0]:
            return "periodical"
        if {"type", "date"} <= data[0].keys():
            return "clue"
    return None


def _load_json(stream: typing.BinaryIO) -> Any:
    text = BoundedReader(stream, IMPORT_MAX_JSON_BYTES).read()
    try:
        return json.loads(text.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise MalformedFile("the file is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise MalformedFile(
            f"line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"
        ) from None


def _export_xml_of(archive: zipfile.ZipFile, max_unpacked: int) -> zipfile.ZipInfo:
    members = [
        member
        for member in archive.infolist()
        if member.filename.lower().endswith(".xml")
        and Path(member.filename).name != APPLE_COMPANION_XML
    ]
    if len(members) != 1:
        raise MalformedFile(
            f"the zip holds {len(members)} XML documents; Apple Health's export.zip holds one "
            "(apple_health_export/export.xml)"
        )
    member = members[0]
    if member.file_size > max_unpacked or member.file_size > IMPORT_MAX_COMPRESSION_RATIO * max(
        member.compress_size, 1
    ):
        raise FileTooLarge()
    return member


def read_import(
    stream: typing.BinaryIO, format_name: str | None, max_unpacked: int
) -> ImportedHistory:
    """Her history from a file, its format named or recognized from its content. Blocking
    (it parses): run it in a worker thread."""
    head = stream.read(4096)
    stream.seek(0)
    if not head:
        raise MalformedFile("the file is empty")
    if head.startswith(ZIP_MAGIC):
        return _read_zip(stream, format_name, max_unpacked)
    if head.startswith(GZIP_MAGIC):
        return _read_gzip(stream, format_name, max_unpacked)
    return _read_text(stream, format_name or _text_kind(head), max_unpacked)


def _read_zip(
    stream: typing.BinaryIO, format_name: str | None, max_unpacked: int
) -> ImportedHistory:
    """A zip archive: Apple Health's export.zip, or nothing PlanHer reads."""
    if format_name not in (None, "apple_health"):
        raise MalformedFile(f"a zip archive is not a {format_name} export")
    try:
        with zipfile.ZipFile(stream) as archive:
            member = _export_xml_of(archive, max_unpacked)
            with archive.open(member) as xml_stream:
                return read_apple_health_xml(BoundedReader(xml_stream, max_unpacked))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError):
        raise MalformedFile("the zip archive is damaged or uses an unknown method") from None


def _read_gzip(
    stream: typing.BinaryIO, format_name: str | None, max_unpacked: int
) -> ImportedHistory:
    """A gzipped file: unpacked within IMPORT_MAX_JSON_BYTES, then read as any other."""
    with gzip.GzipFile(fileobj=stream, mode="rb") as unpacked:
        try:
            return read_import(
                io.BytesIO(BoundedReader(unpacked, IMPORT_MAX_JSON_BYTES).read()),
                format_name,
                max_unpacked,
            )
        except (OSError, EOFError, zlib.error):
            raise MalformedFile("the gzip file is damaged") from None


def _text_kind(head: bytes) -> str | None:
    """What a text file looks like from its start: `apple_health` (XML), `json` (some
    tracker's JSON), `drip` (its CSV header), or None."""
    text_head = head.decode("utf-8-sig", errors="replace").lstrip()
    if text_head.startswith("<"):
        return "apple_health"
    if text_head[:1] in ("{", "["):
        return "json"
    if {"date", "bleeding.value"} <= set(text_head.splitlines()[0].split(",")):
        return "drip"
    return None


def _read_text(stream: typing.BinaryIO, kind: str | None, max_unpacked: int) -> ImportedHistory:
    """A text file of the format named or seen (`kind`, as _text_kind says it)."""
    if kind == "apple_health":
        return read_apple_health_xml(BoundedReader(stream, max_unpacked))
    if kind == "drip":
        try:
            with io.TextIOWrapper(stream, encoding="utf-8-sig", newline="") as text:
                return read_drip_csv(text)
        except UnicodeDecodeError:
            raise MalformedFile("the file is not UTF-8 text") from None
        except csv.Error as error:
            raise MalformedFile(f"not a valid CSV file ({error})") from None
    if kind is None:
        raise UnknownFormat()
    data = _load_json(stream)
    format_name = json_format(data) if kind == "json" else kind
    if format_name is None:
        raise UnknownFormat()
    try:
        return JSON_READERS[format_name](data)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, RecursionError):
        raise MalformedFile(f"it is not laid out as a {format_name} export") from None
