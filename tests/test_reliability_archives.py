"""Untrusted archives: sizes come from headers and are checked before anything is allocated.

Sample shards (.npy, .npz members), cache files and C3D weights (.npz) are read header first
(``vfbench.arrays``): a header claiming 10^12 elements, a zip entry whose size disagrees with its
header, a clip far larger than the protocol can use, or a deflate bomb never makes numpy allocate
more than the caller's limit. ``tracemalloc`` (numpy reports its buffers to it) measures the peak.
Hypothesis fuzzes the header fields and the declared sizes.
"""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfbench.errors import DataError

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PEAK_LIMIT = 16 << 20  # far below any of the sizes the crafted headers declare


def npy_bytes(descr="|u1", fortran=False, shape=(2, 4, 3, 8, 8), data=None, version=1, hlen_delta=0,
              magic=b"\x93NUMPY") -> bytes:
    text = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode("latin1")
    width = 2 if version == 1 else 4
    text += b" " * ((-(len(magic) + 2 + width + len(text) + 1)) % 64) + b"\n"
    if data is None:
        n = 1
        for d in shape:
            n *= max(int(d), 0) if isinstance(d, int) else 0
        data = bytes(min(n, 1 << 16))
    length = min(max(len(text) + hlen_delta, 0), 2 ** (8 * width) - 1).to_bytes(width, "little")
    return magic + bytes([version, 0]) + length + text + data


def npz_bytes(members: dict, deflate=False, lie_size: int = 0) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, payload in members.items():
            zf.writestr(name + ".npy", payload)
    raw = buf.getvalue()
    if lie_size:  # rewrite the central directory's uncompressed size of the first member
        cd = raw.rfind(b"PK\x01\x02")
        raw = raw[:cd + 24] + lie_size.to_bytes(4, "little") + raw[cd + 28:]
    return raw


def measured(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    except BaseException:
        peak = tracemalloc.get_traced_memory()[1]
        assert peak < PEAK_LIMIT, f"{peak:,} bytes allocated before the error"
        raise
    finally:
        tracemalloc.stop()


def read_all(folder_path):
    """Open a sample folder for a 4 x 8 x 8 metric and read every clip; (clips, peak bytes)."""
    from vfbench.evaluation import SampleFolder

    def go():
        f = SampleFolder(folder_path, 4, 8)
        return [b for b in f.iter_clips(0, min(len(f), 64), 4)]

    return measured(go)


sizes = st.sampled_from([0, 1, 2, 3, 4, 8, 10**6, 10**12, 2**62, -1])
shapes = st.lists(sizes, min_size=0, max_size=6).map(tuple)
descrs = st.sampled_from(["|u1", "<f4", "|O", "<i8", "|b1", "[('a', '|u1')]", "nonsense", 7])
VALID = (2, 4, 3, 8, 8)


def mostly(good, others):
    """``good`` about half of the time (so that valid shards get read too), else a value of ``others``."""
    return st.one_of(st.just(good), others)


def one_of(*values):
    return st.sampled_from(list(values))


@given(descr=mostly("|u1", descrs), fortran=mostly(False, one_of(True, "yes")), shape=mostly(VALID, shapes),
       version=one_of(1, 2, 3, 9), hlen_delta=mostly(0, one_of(-7, 5, 70000)),
       data_len=mostly(None, one_of(0, 100, 1536, 6000)), container=one_of("npy", "npz", "npz-deflate"),
       lie=mostly(0, st.just(1 << 31)))
@FUZZ
def test_fuzz_shard_headers_and_sizes(tmp_path_factory, descr, fortran, shape, version, hlen_delta, data_len,
                                      container, lie):
    d = tmp_path_factory.mktemp("shards")
    data = None if data_len is None else bytes(range(256)) * (data_len // 256) + bytes(data_len % 256)
    raw = npy_bytes(descr, fortran, shape, data, version, hlen_delta)
    if container == "npy":
        path = d / "shard-00000.npy"
        path.write_bytes(raw)
    else:
        path = d / "shard-00000.npz"
        path.write_bytes(npz_bytes({"clips": raw}, deflate=container == "npz-deflate", lie_size=lie))
    try:
        clips, peak = read_all(d)
    except DataError as exc:
        assert path.name in str(exc) and "\n" not in str(exc)
        return
    assert peak < PEAK_LIMIT
    assert all(c.dtype == np.uint8 and c.ndim == 5 and c.shape[1:3] == (shape[1], shape[2]) for c in clips)


def test_a_header_claiming_a_trillion_elements_is_refused_before_allocating(tmp_path):
    shape = (10**12 // (4 * 3 * 8 * 8), 4, 3, 8, 8)
    (tmp_path / "a.npy").write_bytes(npy_bytes(shape=shape, data=bytes(4096)))
    with pytest.raises(DataError, match=r"a\.npy.*truncated"):
        read_all(tmp_path)
    (tmp_path / "a.npy").unlink()
    (tmp_path / "b.npz").write_bytes(npz_bytes({"clips": npy_bytes(shape=shape, data=bytes(4096))}, deflate=True))
    with pytest.raises(DataError, match=r"b\.npz.*zip entry holds"):
        read_all(tmp_path)


def test_a_clip_far_larger_than_the_protocol_is_refused(tmp_path):
    (tmp_path / "big.npz").write_bytes(npz_bytes({"clips": npy_bytes(shape=(1, 4, 3, 1024, 1024),
                                                                      data=bytes(4 * 3 * 1024 * 1024))}, deflate=True))
    with pytest.raises(DataError, match=r"big\.npz.*more than the 196,608 bytes a 4 x 8 x 8 metric"):
        read_all(tmp_path)


def test_a_deflate_bomb_is_read_only_as_far_as_the_metric_needs(tmp_path):
    """40 MB of zeros deflate to ~40 kB; the metric uses 8 clips of 768 bytes: only those are decompressed."""
    n = 40 * 2**20 // 768
    buf = io.BytesIO()
    np.save(buf, np.zeros((n, 4, 3, 8, 8), np.uint8))
    (tmp_path / "bomb.npz").write_bytes(npz_bytes({"clips": buf.getvalue()}, deflate=True))
    assert (tmp_path / "bomb.npz").stat().st_size < 2**20

    from vfbench.evaluation import SampleFolder

    def go():
        f = SampleFolder(tmp_path, 4, 8)
        assert len(f) == n
        return list(f.iter_clips(0, 8, 4))

    clips, peak = measured(go)
    assert [c.shape[0] for c in clips] == [4, 4] and peak < 4 << 20


def test_a_damaged_member_is_named_when_it_is_read(tmp_path):
    good = np.random.default_rng(0).integers(0, 256, (8, 4, 3, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "s.npz", clips=good)
    raw = bytearray((tmp_path / "s.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the deflate stream: headers fine, data not
    (tmp_path / "s.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"s\.npz"):
        read_all(tmp_path)


@given(descr=descrs, shape=shapes, deflate=st.booleans(), lie=st.sampled_from([0, 1 << 31]),
       extra=st.integers(0, 3))
@FUZZ
def test_fuzz_npz_weights_and_cache_files(tmp_path_factory, descr, shape, deflate, lie, extra):
    """``load_npz`` (C3D weights, the statistics cache): within the limit or an error, never a big allocation."""
    from vfbench.arrays import ZIP_ERRORS, load_npz

    members = {f"m{i}": npy_bytes(descr, False, shape) for i in range(1 + extra)}
    path = tmp_path_factory.mktemp("npz") / "w.npz"
    path.write_bytes(npz_bytes(members, deflate=deflate, lie_size=lie))
    try:
        arrays, peak = measured(lambda: load_npz(path, 1 << 20, "the test allows"))
    except (ValueError,) + ZIP_ERRORS:
        return
    assert peak < PEAK_LIMIT and sum(a.nbytes for a in arrays.values()) <= 1 << 20


def test_c3d_weights_declaring_more_than_the_architecture_are_refused(tmp_path):
    from vfbench.errors import WeightsError
    from vfbench.metrics.c3d import load_chainer_c3d

    shape = (10**6, 10**6)  # 8 TB of float64 declared in a tiny file
    (tmp_path / "c3d.npz").write_bytes(npz_bytes({"fc6/W": npy_bytes("<f8", False, shape, bytes(64))}))
    with pytest.raises(WeightsError, match=r"c3d\.npz"):
        measured(lambda: load_chainer_c3d(tmp_path / "c3d.npz"))
