"""Arrow IPC streams as HTTP bodies: how feature rows travel between a client and a server."""

from __future__ import annotations

import io
import struct
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


def read_plain_ipc(source: bytes, what: str = "the body") -> pa.Table:
    """An Arrow IPC stream holding no compressed batch and no dictionary, read whole; its
    decoded size is then at most its own (a few KB of zstd cannot become GB in memory).
    InvalidArgument otherwise, before any batch is decoded. For bodies whose senders never
    compress (the A/B exposure log's); the feature data plane reads with ``read_ipc``."""
    try:
        messages = pa.ipc.MessageReader.open_stream(pa.py_buffer(source))
        schema: pa.Schema | None = None
        batches: list[pa.RecordBatch] = []
        for message in messages:
            if message.type == "schema" and schema is None:
                schema = pa.ipc.read_schema(message)
                continue
            if message.type != "record batch" or schema is None:
                raise InvalidArgument(
                    f"{what}: an Arrow IPC stream of a schema and record batches only, "
                    f"got a {message.type} message"
                )
            if _compressed(message.metadata):
                raise InvalidArgument(
                    f"{what}: compressed Arrow IPC batches are not accepted; send them plain"
                )
            batches.append(pa.ipc.read_record_batch(message, schema))
    except (pa.ArrowInvalid, OSError, IndexError, struct.error) as e:
        raise InvalidArgument(f"{what}: not an Arrow IPC stream, or cut short: {e}") from None
    if schema is None:
        raise InvalidArgument(f"{what}: not an Arrow IPC stream (no schema)")
    return pa.Table.from_batches(batches, schema)


def _compressed(metadata: pa.Buffer) -> bool:
    """Whether a record batch message (its flatbuffer ``Message``) says its body is
    compressed: ``Message.header`` (field 2) is a ``RecordBatch`` whose field 3 is its
    ``BodyCompression``, present only when the body is compressed."""
    data = metadata.to_pybytes()
    header = _field(data, struct.unpack_from("<I", data, 0)[0], 2)
    if header is None:
        raise InvalidArgument("the Arrow IPC stream has a record batch with no header")
    batch = header + struct.unpack_from("<I", data, header)[0]
    return _field(data, batch, 3) is not None


def _field(data: bytes, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` is; None when absent."""
    if not 0 <= table <= len(data) - 4:
        raise InvalidArgument("the Arrow IPC stream has a damaged message")
    vtable = table - struct.unpack_from("<i", data, table)[0]
    if not 0 <= vtable <= len(data) - 4:
        raise InvalidArgument("the Arrow IPC stream has a damaged message")
    size = struct.unpack_from("<H", data, vtable)[0]
    at = 4 + 2 * index
    if at + 2 > size:
        return None
    offset = struct.unpack_from("<H", data, vtable + at)[0]
    return None if offset == 0 else table + offset
