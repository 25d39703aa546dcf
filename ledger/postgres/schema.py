"""The PostgreSQL ledger's tables: their layout version, how they are created, the statements
over them (``{schema}``, ``{events}`` and ``{tile}`` filled in by `PostgresBackend.sql`)."""

from __future__ import annotations

from typing import Final

import psycopg
from psycopg.rows import TupleRow

__all__ = ["ANY_STATEMENTS", "DDL", "EVENTS_TABLE", "FORMAT", "STATEMENTS", "Cursor"]

Cursor = psycopg.Cursor[TupleRow]

EVENTS_TABLE: Final = "ledger_events"
FORMAT: Final = b"adminchain-postgres/2"
"""The schema's layout version (2: Merkle nodes in tiles of `TILE` hashes a row)."""
DDL: Final = (
    'CREATE TABLE IF NOT EXISTS {schema}.ids (id TEXT COLLATE "C" PRIMARY KEY,'
    " position BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {schema}.merkle_tiles (level SMALLINT NOT NULL,"
    " tile BIGINT NOT NULL, hashes BYTEA NOT NULL, PRIMARY KEY (level, tile))",
    "CREATE TABLE IF NOT EXISTS {schema}.checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {schema}.meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    "INSERT INTO {schema}.meta VALUES ('format', %(format)s) ON CONFLICT DO NOTHING",
)
STATEMENTS: Final = {
    "copy_ids": "COPY {schema}.ids (id, position) FROM STDIN (FORMAT BINARY)",
    "copy_tiles": "COPY {schema}.merkle_tiles (level, tile, hashes) FROM STDIN (FORMAT BINARY)",
    "insert_events": "INSERT INTO {schema}.{events}"
    " (originator_id, originator_version, topic, state, notification_id)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bytea[], %s::bigint[])",
    "insert_ids": "INSERT INTO {schema}.ids (id, position)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[])",
    "upsert_tiles": "INSERT INTO {schema}.merkle_tiles (level, tile, hashes)"
    " SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[])"
    " ON CONFLICT (level, tile) DO UPDATE SET hashes = EXCLUDED.hashes",
    "select_tile": "SELECT hashes FROM {schema}.merkle_tiles WHERE level = %s AND tile = %s",
    "select_tiles": "SELECT level, tile, hashes FROM {schema}.merkle_tiles"
    " WHERE (level, tile) IN (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))",
    "delete_tiles": "DELETE FROM {schema}.merkle_tiles"
    " WHERE (level, tile) IN (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))",
    "select_page": "SELECT notification_id, originator_id, state FROM {schema}.{events}"
    " WHERE notification_id BETWEEN %s AND %s ORDER BY notification_id",
    "select_stored": "SELECT notification_id, state FROM {schema}.{events}"
    " WHERE notification_id BETWEEN %s AND %s ORDER BY notification_id",
    "select_span": "SELECT tile, hashes FROM {schema}.merkle_tiles"
    " WHERE level = %s AND tile BETWEEN %s AND %s ORDER BY tile",
    "select_leaves": "SELECT tile, hashes FROM {schema}.merkle_tiles"
    " WHERE level = 0 AND tile BETWEEN (%s - 1) / {tile} AND (%s - 1) / {tile} ORDER BY tile",
    "select_positions": "SELECT notification_id FROM {schema}.{events}"
    " WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version",
    "select_positions_of_subjects": "SELECT e.originator_id, e.notification_id"
    " FROM unnest(%s::text[], %s::bigint[]) AS q(s, k) JOIN {schema}.{events} AS e"
    " ON e.originator_id = q.s AND e.originator_version > q.k"
    " ORDER BY e.originator_id, e.originator_version",
    "format": "SELECT value FROM {schema}.meta WHERE key = 'format'",
    "get_meta": "SELECT value FROM {schema}.meta WHERE key = %s",
    "meta_items": "SELECT key, value FROM {schema}.meta WHERE starts_with(key, %s) ORDER BY key",
    "put_meta": "INSERT INTO {schema}.meta (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    "add_meta": "INSERT INTO {schema}.meta (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO NOTHING",
    "put_checkpoint": "INSERT INTO {schema}.checkpoints (size, note) VALUES (%s, %s)"
    " ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note",
    "checkpoints": "SELECT size, note FROM {schema}.checkpoints ORDER BY size",
    "scan_ids": "SELECT id, position FROM {schema}.ids",
    "truncate_ids": "TRUNCATE {schema}.ids",
}
ANY_STATEMENTS: Final = {  # {values}: an array parameter, or a newline-joined text (any_text)
    "select_ids": "SELECT id, position FROM {schema}.ids WHERE id = ANY({values})",
    # each subject's last version: one step down the primary key's index a subject (a MAX with
    # GROUP BY reads every version of every subject named: it grows with the log)
    "select_versions": "SELECT s, last.v FROM unnest({values}) AS s, LATERAL"
    " (SELECT originator_version AS v FROM {schema}.{events} WHERE originator_id = s"
    " ORDER BY originator_version DESC LIMIT 1) AS last",
}
