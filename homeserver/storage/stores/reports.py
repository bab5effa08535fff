"""Reports of events, rooms and users (C-S API "Reporting content"), kept for operators."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.database import Database


@dataclass(frozen=True)
class ContentReport:
    report_id: str
    kind: str  # "event", "room" or "user"
    reporter: str
    room_id: str | None
    event_id: str | None
    user_id: str | None
    reason: str | None
    score: int | None
    received_ts: int


class ReportsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_report(self, report: ContentReport) -> None:
        await self.db.execute(
            "INSERT INTO content_reports (report_id, kind, reporter, room_id, event_id, user_id,"
            " reason, score, received_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            report.report_id,
            report.kind,
            report.reporter,
            report.room_id,
            report.event_id,
            report.user_id,
            report.reason,
            report.score,
            report.received_ts,
        )

    async def get_reports(self, limit: int) -> list[ContentReport]:
        """The newest `limit` reports, newest first."""
        rows = await self.db.fetch(
            "SELECT report_id, kind, reporter, room_id, event_id, user_id, reason, score,"
            " received_ts FROM content_reports ORDER BY received_ts DESC, report_id LIMIT $1",
            limit,
        )
        return [ContentReport(*row) for row in rows]
