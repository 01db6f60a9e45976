"""Arrow IPC streams as HTTP bodies: how feature rows travel between a client and a server."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import IO

import pyarrow as pa

from plinth.errors import InvalidArgument

MEDIA_TYPE = "application/vnd.apache.arrow.stream"


def ipc_chunks(schema: pa.Schema, tables: Iterable[pa.Table]) -> Iterator[bytes]:
    """``tables`` as one Arrow IPC stream, yielded a table at a time. The end-of-stream
    marker comes only after the last table: a stream cut short (an error in ``tables``)
    never reads as complete on the other side."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as writer:
        for table in tables:
            writer.write_table(table)
            yield _drain(sink)
    yield _drain(sink)


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def open_ipc(source: IO[bytes] | bytes) -> pa.RecordBatchStreamReader:
    try:
        return pa.ipc.open_stream(pa.py_buffer(source) if isinstance(source, bytes) else source)
    except (pa.ArrowInvalid, OSError) as e:
        raise InvalidArgument(f"the body is not an Arrow IPC stream: {e}") from None


def read_ipc(source: IO[bytes] | bytes) -> pa.Table:
    reader = open_ipc(source)
    try:
        return reader.read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise InvalidArgument(f"the Arrow IPC stream is cut short or damaged: {e}") from None


def tables_of(reader: pa.RecordBatchStreamReader) -> Iterator[pa.Table]:
    """Each batch of a stream as a table; a damaged stream is the sender's error."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as e:
            raise InvalidArgument(f"the Arrow IPC stream is cut short or damaged: {e}") from None
        yield pa.Table.from_batches([batch])
