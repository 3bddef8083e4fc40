"""Score's objects adopted in place: no byte is copied or read. The buckets are listed (object
and state buckets, with their partitions), each file pyscore has from SONG is found where
Score's S3BucketNamingService puts it (or in the base bucket, where Score left objects written
before partitioning), and gets an `objects` row from `data/<id>.meta` (object size and MD5,
part sizes and part MD5s as Score recorded them), else from a HEAD (Content-MD5 or the
`md5chksum` user metadata). Each is checked against SONG's file record (size; MD5 where known):
a mismatch is reported and not served. Everything is read and checked before anything is
written, so bad input (an unreadable bucket, a `.meta` that is not JSON) changes nothing."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from pyscore.server.db import Database, insert_rows
from pyscore.server.importing.records import digest
from pyscore.server.objects import SENTINEL, part_layout
from pyscore.server.store.s3 import S3Store
from pyscore.server.tables import File, ImportMark, StoredObject

PAGE = 1000
MD5 = re.compile(r"[0-9a-f]{32}")
USER_MD5 = "md5chksum"  # Score's s3.customMd5Property
OBJECT_COLUMNS = ("size", "md5", "part_size", "part_md5s", "upload_id", "bucket")


class BucketError(Exception):
    """A bucket that cannot be read, or a `.meta` that cannot be: one line for the operator."""


@dataclass(frozen=True)
class Listed:
    bucket: str
    size: int
    etag: str
    modified: datetime


@dataclass
class ScoreSummary:
    adopted: dict[str, int] = field(default_factory=dict)  # new, changed, unchanged
    mismatched: list[tuple[str, str]] = field(default_factory=list)  # object id, why
    missing: list[tuple[str, str]] = field(default_factory=list)  # object id, file name
    orphans: list[str] = field(default_factory=list)  # objects without a SONG file
    uploads: list[tuple[str, str, str]] = field(default_factory=list)  # id, upload id, bucket

    def add(self, outcome: str) -> None:
        self.adopted[outcome] = self.adopted.get(outcome, 0) + 1


def reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message') or exc}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def md5_hex(value: Optional[str]) -> Optional[str]:
    """An MD5 as Score may record it (hex, or base64 as Content-MD5 and md5chksum are) in
    lower-case hex; None if it is neither."""
    if not value:
        return None
    value = value.strip().strip('"')
    if MD5.fullmatch(value.lower()):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def row_from_meta(meta: Any, listed: Listed) -> dict:
    """An `objects` row from Score's ObjectSpecification; part MD5s kept when Score's parts
    are the parts pyscore would serve (the same layout), else left out."""
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    size = meta.get("objectSize")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ValueError("no objectSize")
    parts = meta.get("parts") or []
    part_size = parts[0].get("partSize") if parts and isinstance(parts[0], dict) else None
    if not isinstance(part_size, int) or part_size <= 0:
        part_size = max(size, 1)
    layout = [(p.get("offset"), p.get("partSize")) for p in parts if isinstance(p, dict)]
    md5s = [md5_hex(p.get("sourceMd5")) for p in parts if isinstance(p, dict)]
    keep = layout == part_layout(size, part_size) and all(md5s)
    return {
        "size": size,
        "md5": md5_hex(meta.get("objectMd5")),
        "part_size": part_size,
        "part_md5s": md5s if keep else [],
        "upload_id": str(meta.get("uploadId") or meta.get("objectId") or ""),
        "last_modified": listed.modified,
    }


def row_from_head(head: dict, listed: Listed, object_id: str) -> dict:
    """An `objects` row from a HEAD, as Score's download does without `.meta`."""
    md5 = md5_hex(head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-md5"))
    md5 = md5 or md5_hex((head.get("Metadata") or {}).get(USER_MD5))
    return {
        "size": listed.size,
        "md5": md5,
        "part_size": max(listed.size, 1),
        "part_md5s": [],
        "upload_id": object_id,
        "last_modified": listed.modified,
    }


class ScoreAdoption:
    """One run of `score-server import score`: `scan()` reads and checks everything,
    `write()` then records what was found."""

    def __init__(
        self,
        db: Database,
        store: S3Store,
        *,
        dry_run: bool = False,
        progress: Callable[[str, int, int], None] = lambda what, done, total: None,
    ) -> None:
        self.db, self.store, self.dry_run, self.progress = db, store, dry_run, progress
        self.summary = ScoreSummary()
        self.rows: dict[str, dict] = {}  # object id -> row to write
        self.tokens: dict[str, str] = {}
        self.drop: list[str] = []  # rows of objects that no longer match SONG's record

    # -- listing ---------------------------------------------------------------------------
    def _list(self, bucket: str, prefix: str) -> Iterator[dict]:
        pages = self.store.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        )
        try:
            for page in pages:
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            raise BucketError(f"cannot list s3://{bucket}/{prefix}: {reason(exc)}") from None

    def listing(self) -> tuple[dict[str, Listed], dict[str, Listed], dict[str, Listed]]:
        """Objects of the object buckets and `.meta` files of the state buckets, by id (in
        the base bucket apart, for objects Score left there), and uploads in progress."""
        data: dict[str, Listed] = {}
        base: dict[str, Listed] = {}
        metas: dict[str, Listed] = {}
        root = f"{self.store.prefix}/" if self.store.prefix else ""
        data_prefix, upload_prefix = f"{root}data/", f"{root}upload/"
        object_buckets = {self.store.bucket}
        state_buckets = {self.store.state_bucket}
        for n in range(self.store.partitions):
            object_buckets.add(f"{self.store.bucket}.{n}")
            state_buckets.add(f"{self.store.state_bucket}.{n}")
        for bucket in sorted(object_buckets | state_buckets):
            for item in self._list(bucket, data_prefix):
                name = item["Key"][len(data_prefix) :]
                listed = Listed(
                    bucket, item["Size"], item.get("ETag", "").strip('"'), item["LastModified"]
                )
                if name.endswith(".meta"):
                    if bucket in state_buckets:
                        metas[f"{bucket}/{name[:-5]}"] = listed
                elif bucket in object_buckets and "/" not in name and name != SENTINEL:
                    if bucket == self.store.bucket and self.store.partitions:
                        base[name] = listed
                    else:
                        data[name] = listed
            if bucket in state_buckets:
                for item in self._list(bucket, upload_prefix):
                    m = re.match(r"([^/_]+)_([^/]+)/\.meta$", item["Key"][len(upload_prefix) :])
                    if m:
                        self.summary.uploads.append((m[1], m[2], bucket))
        return data, base, metas

    # -- reading and checking --------------------------------------------------------------
    def scan(self) -> None:
        data, base, metas = self.listing()
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(File)) or 0
            done, after = 0, ""
            bad: list[str] = []
            while True:
                files = s.execute(
                    select(File.object_id, File.file_name, File.file_size, File.file_md5sum)
                    .where(File.object_id > after)
                    .order_by(File.object_id)
                    .limit(PAGE)
                ).all()
                if not files:
                    break
                after = files[-1][0]
                ids = [f[0] for f in files]
                marks = dict(
                    s.execute(
                        select(ImportMark.key, ImportMark.token).where(
                            ImportMark.kind == "object", ImportMark.key.in_(ids)
                        )
                    ).all()
                )
                have = {
                    o.object_id: o
                    for o in s.scalars(select(StoredObject).where(StoredObject.object_id.in_(ids)))
                }
                for object_id, name, size, md5 in files:
                    try:
                        self._one(object_id, name, size, md5, data, base, metas, marks, have)
                    except BucketError as exc:
                        bad.append(str(exc))
                done += len(files)
                self.progress("objects", done, total)
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise BucketError(bad[0] + more)
        self.summary.orphans = sorted(set(data) | set(base))

    def _one(
        self,
        object_id: str,
        name: str,
        size: int,
        md5: str,
        data: dict[str, Listed],
        base: dict[str, Listed],
        metas: dict[str, Listed],
        marks: dict[str, str],
        have: dict[str, StoredObject],
    ) -> None:
        home = self.store.partition(self.store.bucket, object_id)
        listed = data.pop(object_id, None)
        moved = None
        if listed is None or listed.bucket != home:
            moved = base.pop(object_id, None)
            if moved is None:
                if listed is not None:  # in another partition than its id maps to
                    self.summary.mismatched.append(
                        (object_id, f"in s3://{listed.bucket}, not in s3://{home}")
                    )
                else:
                    self.summary.missing.append((object_id, name))
                self._unserve(object_id, have)
                return
            listed = moved
        state = (
            self.store.state_bucket
            if moved
            else self.store.partition(self.store.state_bucket, object_id)
        )
        meta = metas.get(f"{state}/{object_id}") or metas.get(
            f"{self.store.state_bucket}/{object_id}"
        )
        token = digest([listed.bucket, listed.etag, listed.size, meta.etag if meta else None])
        if marks.get(object_id) == token and object_id in have:
            self.summary.add("unchanged")
            return
        row = self._read(object_id, listed, meta)
        row["bucket"] = listed.bucket if moved and self.store.partitions else None
        problem = None
        if row["size"] != listed.size:
            problem = f".meta says {row['size']} bytes, the bucket holds {listed.size}"
        elif row["size"] != size:
            problem = f"{listed.size} bytes in the bucket, SONG says {size}"
        elif row["md5"] and md5 and row["md5"] != md5.lower():
            problem = f"MD5 {row['md5']} in the bucket, SONG says {md5.lower()}"
        if problem:
            self.summary.mismatched.append((object_id, problem))
            self._unserve(object_id, have)
            return
        old = have.get(object_id)
        if old is None:
            outcome = "new"
        elif {c: getattr(old, c) for c in OBJECT_COLUMNS} == {c: row[c] for c in OBJECT_COLUMNS}:
            outcome = "unchanged"
        else:
            outcome = "changed"
        self.summary.add(outcome)
        if outcome != "unchanged":
            self.rows[object_id] = row
        self.tokens[object_id] = token

    def _unserve(self, object_id: str, have: dict[str, StoredObject]) -> None:
        if object_id in have:
            self.drop.append(object_id)

    def _read(self, object_id: str, listed: Listed, meta: Optional[Listed]) -> dict:
        key = self.store.meta_key(object_id)
        try:
            if meta is None:
                head = self.store.client.head_object(
                    Bucket=listed.bucket, Key=self.store.data_key(object_id)
                )
                return row_from_head(head, listed, object_id)
            body = self.store.client.get_object(Bucket=meta.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise BucketError(
                f"cannot read {object_id} in s3://{listed.bucket}: {reason(exc)}"
            ) from None
        try:
            return row_from_meta(json.loads(body), listed)
        except ValueError as exc:
            raise BucketError(
                f"s3://{meta.bucket}/{key} is not Score's ObjectSpecification JSON: {exc}"
            ) from None

    # -- writing ---------------------------------------------------------------------------
    def write(self) -> None:
        """Record what `scan` found, a page per transaction; nothing on a dry run."""
        if self.dry_run:
            return
        ids = list(self.rows)
        for start in range(0, len(ids), PAGE):
            with self.db.session() as s:
                self._rows(s, ids[start : start + PAGE])
        keys = list(self.tokens)
        for start in range(0, len(keys), PAGE):
            with self.db.session() as s:
                chunk = keys[start : start + PAGE]
                self._unmark(s, chunk)
                insert_rows(
                    s,
                    ImportMark,
                    [{"kind": "object", "key": k, "token": self.tokens[k]} for k in chunk],
                )
        for start in range(0, len(self.drop), PAGE):
            with self.db.session() as s:
                chunk = self.drop[start : start + PAGE]
                s.execute(delete(StoredObject).where(StoredObject.object_id.in_(chunk)))
                self._unmark(s, chunk)

    def _unmark(self, s: Session, ids: list[str]) -> None:
        s.execute(delete(ImportMark).where(ImportMark.kind == "object", ImportMark.key.in_(ids)))

    def _rows(self, s: Session, ids: list[str]) -> None:
        have = set(s.scalars(select(StoredObject.object_id).where(StoredObject.object_id.in_(ids))))
        fresh = [{"object_id": i, **self.rows[i]} for i in ids if i not in have]
        insert_rows(s, StoredObject, fresh)
        for i in have:
            s.execute(
                update(StoredObject).where(StoredObject.object_id == i).values(**self.rows[i])
            )
