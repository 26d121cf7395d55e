"""The restore stream's decoding: slice by slice, across frames, in order."""

from __future__ import annotations

import os

import zstandard

from drsentry.adapters.restore_stream import DECODE_SLICE, _decode, _ZstdFrames, session_options
from drsentry.jobs.verify.run import SCRATCH_SESSION_SETTINGS


class Sink:
    """Stands in for the feeder thread: keeps what it is given."""

    def __init__(self) -> None:
        self.feeding = True
        self.slices: list[bytes] = []

    def put(self, data: bytes) -> None:
        self.slices.append(data)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def _frames(*parts: bytes) -> bytes:
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    return b"".join(compressor.compress(part) for part in parts)


def test_two_frames_split_at_odd_places_decode_in_order() -> None:
    # Given two frames (a multi-frame writer) of incompressible data, cut into odd chunks
    first, second = os.urandom(3 * DECODE_SLICE + 17), os.urandom(DECODE_SLICE // 2)
    stream = _frames(first, second)
    decoder, sink = _ZstdFrames(), Sink()

    # When every chunk is decoded
    errors = [_decode(chunk, decoder, sink, 0) for chunk in _chunks(stream, 100_003)]

    # Then the output is the input, in order, handed over slice by slice, and both frames ended
    assert errors == [None] * len(errors)
    assert b"".join(sink.slices) == first + second
    assert len(sink.slices) > len(_chunks(stream, 100_003))
    assert decoder.frames == 2 and decoder.complete


def test_a_stream_cut_mid_frame_is_not_complete() -> None:
    stream = _frames(os.urandom(5 * DECODE_SLICE))
    decoder, sink = _ZstdFrames(), Sink()

    assert _decode(stream[: len(stream) // 2], decoder, sink, 0) is None

    assert not decoder.complete


def test_a_corrupt_stream_names_the_offset_and_stops_decoding() -> None:
    stream = bytearray(_frames(os.urandom(4 * DECODE_SLICE)))
    stream[0] ^= 0xFF  # no longer a zstd frame
    sink = Sink()

    error = _decode(bytes(stream), _ZstdFrames(), sink, 4096)

    assert error is not None and "zstd stream is corrupt after 4,096 bytes" in error
    assert sink.slices == []


def test_nothing_is_handed_over_once_pg_restore_has_gone() -> None:
    decoder, sink = _ZstdFrames(), Sink()
    sink.feeding = False

    assert _decode(_frames(os.urandom(DECODE_SLICE)), decoder, sink, 0) is None

    assert sink.slices == [] and decoder.complete


def test_restore_session_settings_come_before_the_callers_own() -> None:
    options = session_options(SCRATCH_SESSION_SETTINGS, "-c maintenance_work_mem=1GB")

    assert options == (
        "-c maintenance_work_mem=256MB -c synchronous_commit=off -c maintenance_work_mem=1GB"
    )  # PostgreSQL applies them in order: the caller's setting wins
    assert session_options({}, "") == ""
