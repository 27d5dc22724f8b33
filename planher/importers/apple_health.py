"""Apple Health's export.xml, read as a stream with no entities or external references."""

from __future__ import annotations

import datetime as dt
import typing
import xml.sax
import xml.sax.handler
from typing import Any

import defusedxml
import defusedxml.sax

from planher.config import PERIOD_MAX_DAYS
from planher.importers.history import (
    SPOTTING_SKIPPED,
    ImportedHistory,
    MalformedFile,
    calendar_date,
    periods_from_bleeding_days,
)

APPLE_BLEEDING_TYPE = "HKCategoryTypeIdentifierMenstrualFlow"
APPLE_SPOTTING_TYPE = "HKCategoryTypeIdentifierIntermenstrualBleeding"
APPLE_FLOW_PREFIXES = ("HKCategoryValueMenstrualFlow", "HKCategoryValueVaginalBleeding")
APPLE_BLEEDING_FLOWS = frozenset({"Light", "Medium", "Heavy", "Unspecified"})
APPLE_CYCLE_START_KEYS = frozenset({"HKMenstrualCycleStart", "HKMetadataKeyMenstrualCycleStart"})


class AppleHealthReader(xml.sax.handler.ContentHandler):
    """export.xml read as a stream of SAX events: memory holds the bleeding days, never the
    document (a real export holds every health record of the phone, often gigabytes)."""

    def __init__(self, history: ImportedHistory) -> None:
        super().__init__()
        self.history = history
        self.bleeding: set[dt.date] = set()
        self.starts: set[dt.date] = set()
        self.record: dict[str, Any] | None = None
        self.seen_root = False

    def where(self) -> str:
        return f"line {self._locator.getLineNumber()}" if self._locator else "the document"

    def startElement(self, name: str, attrs: Any) -> None:  # noqa: N802 (SAX's names)
        if not self.seen_root:
            if name != "HealthData":
                raise MalformedFile(f"{self.where()}: an Apple Health export's root is HealthData")
            self.seen_root = True
        elif name == "Record":
            kind = attrs.get("type")
            if kind in (APPLE_BLEEDING_TYPE, APPLE_SPOTTING_TYPE):
                self.record = {"type": kind, "cycle_start": False, **dict(attrs)}
            else:
                self.history.count_unmapped(str(kind))
        elif name == "MetadataEntry" and self.record is not None:
            if attrs.get("key") in APPLE_CYCLE_START_KEYS and attrs.get("value") == "1":
                self.record["cycle_start"] = True

    def endElement(self, name: str) -> None:  # noqa: N802 (SAX's names)
        if name != "Record" or self.record is None:
            return
        record, self.record = self.record, None
        where = self.where()
        first = calendar_date(record.get("startDate"), f"{where}, startDate")
        end_text = record.get("endDate") or record.get("startDate")
        last = calendar_date(end_text, f"{where}, endDate")
        if last > first and end_text[11:19] == "00:00:00":
            last -= dt.timedelta(days=1)  # ends at the midnight that starts the next day
        if (last - first).days >= PERIOD_MAX_DAYS or last < first:
            raise MalformedFile(f"{where}: a bleeding record from {first} to {last}")
        days = [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
        value = record.get("value") or ""
        flow = next((value[len(p) :] for p in APPLE_FLOW_PREFIXES if value.startswith(p)), None)
        if record["type"] == APPLE_SPOTTING_TYPE:
            for day in days:
                self.history.skipped.add("day", SPOTTING_SKIPPED, day)
        elif flow in APPLE_BLEEDING_FLOWS:
            self.bleeding.update(days)
            if record["cycle_start"]:
                self.starts.add(first)
        elif flow != "None":
            raise MalformedFile(f"{where}: unknown menstrual flow value")


def read_apple_health_xml(stream: typing.BinaryIO) -> ImportedHistory:
    history = ImportedHistory("apple_health")
    reader = AppleHealthReader(history)
    parser = defusedxml.sax.make_parser()  # no entities, no external references
    parser.setFeature(xml.sax.handler.feature_external_ges, False)
    parser.setContentHandler(reader)
    try:
        parser.parse(stream)
    except xml.sax.SAXParseException as error:
        raise MalformedFile(f"line {error.getLineNumber()}: not well-formed XML") from None
    except defusedxml.DefusedXmlException:
        raise MalformedFile(
            "the XML declares entities or external references, which PlanHer never expands"
        ) from None
    if not reader.seen_root:
        raise MalformedFile("the document is empty")
    history.periods = periods_from_bleeding_days(reader.bleeding, reader.starts)
    return history
