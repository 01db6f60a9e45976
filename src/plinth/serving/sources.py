"""Inputs of batch scoring: a Parquet file or folder, or a Delta table, read in chunks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds

from plinth.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from deltalake import DeltaTable


# -- input -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str  # the absolute path (or URI) read
    dataset: ds.Dataset
    identity: str  # what the default job key hashes

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.schema.names)

    def count_rows(self) -> int:
        return int(self.dataset.count_rows())

    def chunks(self, rows: int) -> Iterator[pa.Table]:
        """The rows in order, ``rows`` at a time (the last chunk may be shorter)."""
        pending: list[pa.RecordBatch] = []
        size = 0
        try:
            for batch in self.dataset.to_batches(batch_size=rows):
                pending.append(batch)
                size += batch.num_rows
                while size >= rows:
                    table = pa.Table.from_batches(pending, self.dataset.schema)
                    yield table.slice(0, rows)
                    rest = table.slice(rows)
                    pending, size = rest.to_batches(), rest.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise InvalidArgument(f"cannot read input {self.name}: {e}") from e
        if size:
            yield pa.Table.from_batches(pending, self.dataset.schema)


def open_source(path: str, identity: str | None = None) -> Source:
    """A Parquet file, a folder of Parquet files (hidden ``.``/``_`` names skipped) or a
    Delta table folder (a URI for remote Delta tables)."""
    from deltalake import DeltaTable

    if path.startswith("sql:"):
        return _query(path.removeprefix("sql:").strip(), identity)
    if "://" in path and not path.startswith("file://"):
        table = delta_table(path)
        return Source(path, table.to_pyarrow_dataset(), f"delta:{path}@{table.version()}")
    local = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
    if not os.path.exists(local):
        raise NotFound(f"input {path!r} does not exist")
    if os.path.isdir(os.path.join(local, "_delta_log")):
        found = DeltaTable(local)
        return Source(local, found.to_pyarrow_dataset(), f"delta:{local}@{found.version()}")
    files = [local] if os.path.isfile(local) else parquet_files(local)
    if not files:
        raise InvalidArgument(f"input folder {path!r} holds no .parquet files")
    try:
        dataset = ds.dataset(files, format="parquet")
    except (pa.ArrowInvalid, OSError) as e:
        raise InvalidArgument(f"input {path!r} is not Parquet or a Delta table: {e}") from e
    if identity is None:
        stats = [(os.path.relpath(f, local), os.stat(f)) for f in files]
        identity = json.dumps([[name, s.st_size, s.st_mtime_ns] for name, s in stats])
    return Source(local, dataset, f"parquet:{local}:{identity}")


def _query(sql: str, identity: str | None) -> Source:
    """``sql:SELECT ...`` run by DuckDB (over Parquet, CSV or Delta files). The rows are
    held in memory; the default job key hashes the query's text, so give ``--job-key``
    when the same query should score again after its data changed."""
    import hashlib

    from plinth.features.ingest import Query

    if not sql:
        raise InvalidArgument("sql: needs a query, e.g. sql:SELECT * FROM 'customers/*.parquet'")
    table = Query(sql).reader().read_all()
    digest = hashlib.sha256(sql.encode()).hexdigest()
    return Source(f"sql:{sql}", ds.dataset(table), f"sql:{identity or digest}")


def parquet_files(folder: str) -> list[str]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(root, n) for n in names if _visible_parquet(n)]
    return sorted(found)


def _visible_parquet(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def delta_table(uri: str, version: int | None = None) -> DeltaTable:
    """The Delta table at a local path or a URI (``s3://...``), as of ``version``."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, version=version, storage_options=_storage_options(uri))
    except TableNotFoundError:
        raise NotFound(f"no Delta table at {uri!r}") from None


def _storage_options(uri: str) -> dict[str, str]:
    from plinth.features.offline import s3_storage_options

    return s3_storage_options({}) if uri.startswith(("s3://", "s3a://")) else {}
