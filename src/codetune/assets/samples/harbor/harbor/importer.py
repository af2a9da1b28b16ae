"""importer: berths and vessels from CSV files, validated row by row, all or nothing."""

from __future__ import annotations

import csv
from pathlib import Path

from harbor.app import App
from harbor.errors import HarborError, invalid
from harbor.logs import get_logger
from harbor.models import Berth, Vessel
from harbor.models.berth import ensure_berth
from harbor.models.vessel import ensure_vessel

log = get_logger(__name__)

BERTH_COLUMNS = ["id", "pontoon", "max_length_cm", "max_beam_cm", "depth_cm", "has_power"]
VESSEL_COLUMNS = ["id", "name", "owner_id", "length_cm", "beam_cm", "draft_cm"]


def _rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in columns if name not in (reader.fieldnames or [])]
        if missing:
            raise invalid("CSV is missing columns", path=str(path), missing=missing)
        return list(reader)


def _int(row: dict[str, str], name: str, line: int) -> int:
    try:
        return int(row[name])
    except ValueError:
        raise invalid(f"{name} must be an integer", line=line, value=row[name]) from None


def import_berths(app: App, path: Path) -> int:
    rows = _rows(path, BERTH_COLUMNS)
    with app.store.transaction():
        for line, row in enumerate(rows, start=2):
            berth = Berth(id=row["id"], pontoon=row["pontoon"],
                          max_length_cm=_int(row, "max_length_cm", line),
                          max_beam_cm=_int(row, "max_beam_cm", line),
                          depth_cm=_int(row, "depth_cm", line),
                          has_power=row["has_power"].strip().lower() in ("1", "yes", "true"))
            app.berths.store(ensure_berth(berth))
    log.info("imported", kind="berth", count=len(rows), path=str(path))
    return len(rows)


def import_vessels(app: App, path: Path) -> int:
    rows = _rows(path, VESSEL_COLUMNS)
    try:
        with app.store.transaction():
            for line, row in enumerate(rows, start=2):
                vessel = Vessel(id=row["id"], name=row["name"], owner_id=row["owner_id"],
                                length_cm=_int(row, "length_cm", line),
                                beam_cm=_int(row, "beam_cm", line),
                                draft_cm=_int(row, "draft_cm", line))
                app.vessels.store(ensure_vessel(vessel))
    except HarborError as error:
        log.info("import failed", kind="vessel", path=str(path), code=error.code)
        raise
    log.info("imported", kind="vessel", count=len(rows), path=str(path))
    return len(rows)
