import io
import struct
import tarfile

import pytest
import webdataset as wds

from diffengine.datasets.tar_reader import (
    TarFormatError,
    is_plain_tar,
    is_tar_header,
    iter_tar_members,
    iter_tar_samples,
)

LONG = "d" * 90 + "/" + "n" * 120  # beyond ustar's 100-byte name field


def members(names_and_data, fmt=tarfile.PAX_FORMAT, extra=()) -> bytes:
    """A tar in memory; `extra` adds (TarInfo) entries without data: directories, links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in names_and_data:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def entry(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "target" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    return info


CONTENT = [
    ("a/k0.jpg", b"\xff\xd8 image 0"), ("a/k0.TXT", b"caption 0"), ("a/k0.json", b"{}"),
    ("__meta__", b"skipped by webdataset"), ("noextension", b"skipped too"),
    ("a/k1.seg.png", b"multi-dot extension" * 40), ("a/k1.txt", b""),
    (f"{LONG}.jpg", b"long name"), (f"{LONG}.txt", b"long caption"),
    ("dir.with.dots/k2.jpg", b"x" * 511), ("dir.with.dots/k2.txt", b"y" * 513),
    ("émoji-ü/k3.webp", b"unicode"),
]
EXTRA = (entry("a/", tarfile.DIRTYPE), entry("link.jpg", tarfile.SYMTYPE),
         entry("hard.jpg", tarfile.LNKTYPE), entry("fifo", tarfile.FIFOTYPE))


def webdataset_samples(data: bytes) -> list[dict]:
    source = [{"url": "shard", "stream": io.BytesIO(data)}]
    return list(wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(source)))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_samples_match_webdataset_for_every_tar_format(fmt):
    content = CONTENT if fmt != tarfile.USTAR_FORMAT else [(n, d) for n, d in CONTENT if n[:90] != LONG[:90]]
    data = members(content, fmt, EXTRA)
    assert is_tar_header(data[:512])
    ours = list(iter_tar_samples(io.BytesIO(data), "shard"))
    assert ours == webdataset_samples(data)
    assert [s["__key__"] for s in ours][:2] == ["a/k0", "a/k1"] and ours[0]["txt"] == b"caption 0"
    assert ours[1]["seg.png"] == b"multi-dot extension" * 40


def test_ustar_prefix_field_names_long_paths():
    name = "p" * 120 + "/k0.jpg"  # ustar splits it into the 155-byte prefix and the name
    data = members([(name, b"image")], tarfile.USTAR_FORMAT)
    assert data[345:350] == b"ppppp"
    assert list(iter_tar_members(io.BytesIO(data))) == [(name, b"image")]


def test_headers_only_and_data_members():
    data = members(CONTENT, extra=EXTRA)
    with_data = list(iter_tar_members(io.BytesIO(data)))
    assert with_data == [(n, d) for n, d in CONTENT]
    assert list(iter_tar_members(io.BytesIO(data), read_data=False)) == [(n, None) for n, _ in CONTENT]
    # only the members a function of the name picks are read
    picked = list(iter_tar_members(io.BytesIO(data), read_data=lambda name: name.endswith(".json")))
    assert picked == [(n, d if n.endswith(".json") else None) for n, d in CONTENT]
    assert any(d is not None for _, d in picked) and any(d is None for _, d in picked)


def test_every_cut_raises_and_yields_only_whole_members():
    data = members([(f"k{i}.{ext}", bytes([i + 1]) * (300 + 200 * i)) for i in range(3) for ext in ("jpg", "txt")])
    whole = list(iter_tar_samples(io.BytesIO(data), "shard"))
    end = -(-len(data.rstrip(b"\0")) // 512) * 512  # where the end-of-archive blocks start
    for cut in range(0, end + 512, 97):
        stream, got = io.BytesIO(data[:cut]), []
        with pytest.raises(TarFormatError):
            got.extend(iter_tar_samples(stream, "shard"))
        # a sample comes out with the members read whole, never with partial bytes
        assert all(s == {k: v for k, v in w.items() if k in s} for s, w in zip(got, whole, strict=False))
        assert len(got) <= len(whole)
    assert list(iter_tar_samples(io.BytesIO(data[:end + 512]), "shard")) == whole


@pytest.mark.parametrize("offset", [0, 100, 124, 148, 156, 300])
def test_corrupt_header_is_an_error(offset):
    data = bytearray(members([("k0.jpg", b"a" * 600), ("k1.jpg", b"b")]))
    second = data.index(b"k1.jpg")  # the second member's header
    data[second + offset] ^= 0x5A
    with pytest.raises(TarFormatError, match="corrupt member header"):
        list(iter_tar_members(io.BytesIO(bytes(data))))
    assert not is_tar_header(b"this is not a tar" * 40) and not is_tar_header(b"")


def test_duplicate_names_keep_the_first_and_raise_after_the_shard():
    data = members([("k0.jpg", b"first"), ("k0.jpg", b"second"), ("k1.jpg", b"next")])
    got = []
    with pytest.raises(TarFormatError, match="duplicate"):
        got.extend(iter_tar_samples(io.BytesIO(data), "shard"))
    assert got == [{"__key__": "k0", "__url__": "shard", "jpg": b"first"},
                   {"__key__": "k1", "__url__": "shard", "jpg": b"next"}]


def test_sparse_members_are_errors_and_unknown_types_are_skipped():
    data = members([("k0.jpg", b"a")], tarfile.GNU_FORMAT, [entry("sparse.bin", tarfile.GNUTYPE_SPARSE)])
    with pytest.raises(TarFormatError, match="sparse"):
        list(iter_tar_members(io.BytesIO(data)))
    pax_sparse = tarfile.TarInfo("k1.jpg")
    pax_sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    with pytest.raises(TarFormatError, match="sparse"):
        list(iter_tar_members(io.BytesIO(members([], extra=[pax_sparse]))))
    dumpdir = entry("dir", b"D")  # a GNU incremental-dump member: tarfile skips it by its size
    dumpdir.size = 700
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(dumpdir, io.BytesIO(b"d" * 700))
        info = tarfile.TarInfo("k2.jpg")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"b"))
    assert list(iter_tar_members(io.BytesIO(buffer.getvalue()))) == [("k2.jpg", b"b")]


def test_bit_flips_in_pax_headers_give_samples_or_a_format_error():
    # pax records carry no checksum: a flipped bit must not crash the loader, hang it, or let a
    # corrupt size allocate gigabytes
    buffer = io.BytesIO()
    with wds.TarWriter(buffer) as writer:  # a pax mtime record before every member
        for index in range(3):
            writer.write({"__key__": f"k{index}", "jpg": b"image", "txt": b"caption"})
    data = buffer.getvalue()
    pax_data = [offset for offset in range(0, len(data), 512) if data[offset + 156:offset + 157] == b"x"]
    assert pax_data
    outcomes = set()
    for block in pax_data:
        for offset in range(block + 512, block + 560):
            for bit in (0, 1, 4):
                flipped = bytearray(data)
                flipped[offset] ^= 1 << bit
                try:
                    outcomes.add(len(list(iter_tar_samples(io.BytesIO(bytes(flipped)), "shard"))))
                except TarFormatError:
                    outcomes.add("error")
    assert "error" in outcomes and 3 in outcomes
    huge = members([("k0.jpg", b"a")])
    huge_pax = tarfile.TarInfo("k0.jpg")
    huge_pax.pax_headers = {"size": str(1 << 40)}
    with pytest.raises(TarFormatError, match="cut inside"):
        list(iter_tar_members(io.BytesIO(members([], extra=[huge_pax]) + huge)))


def test_signed_header_checksums_are_accepted():
    # old tars summed the header's bytes as signed chars, which differs for non-ASCII names
    data = bytearray(members([("é-ü/k0.jpg", b"image")], tarfile.USTAR_FORMAT))
    header = bytes(data[:512])
    signed = sum(struct.unpack("148b8x356b", header)) + 256
    data[148:156] = b"%06o\0 " % signed
    assert signed != sum(header[:148]) + sum(header[156:]) + 256
    assert list(iter_tar_members(io.BytesIO(bytes(data)))) == [("é-ü/k0.jpg", b"image")]


def writer_tar(count: int) -> bytes:
    """A shard as webdataset's TarWriter writes it: a pax header before each of jpg, json, txt."""
    buffer = io.BytesIO()
    with wds.TarWriter(buffer) as writer:
        for index in range(count):
            writer.write({"__key__": f"k{index}", "jpg": bytes([index + 1]) * 700, "json": b"{}",
                          "txt": b"caption %d" % index})
    return buffer.getvalue()


def header_offsets(data: bytes, name: str) -> tuple[int, int]:
    """Offsets of the pax header and of the ustar header of member `name`."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember(name)
    return member.offset, member.offset_data - 512


def read_until_error(data: bytes) -> tuple[list[dict], TarFormatError | None]:
    got = []
    try:
        got.extend(iter_tar_samples(io.BytesIO(data), "shard"))
    except TarFormatError as exn:
        return got, exn
    return got, None


@pytest.mark.parametrize("member", ["k3.jpg", "k3.json", "k3.txt", "k0.jpg", "k7.txt"])
@pytest.mark.parametrize("header", [0, 1])  # the pax header, the ustar header
@pytest.mark.parametrize("offset", [100, 124, 136, 148, 300])  # mode, size, mtime, checksum, gname
def test_a_bit_flip_in_a_header_loses_that_sample_only(member, header, offset):
    data = bytearray(writer_tar(8))
    data[header_offsets(bytes(data), member)[header] + offset] ^= 0x04
    whole = list(iter_tar_samples(io.BytesIO(writer_tar(8)), "shard"))
    assert is_plain_tar(io.BytesIO(bytes(data)))  # also when the first header broke
    got, error = read_until_error(bytes(data))
    assert got == [sample for sample in whole if sample["__key__"] != member[:2]]  # the rest, whole, in order
    assert error is not None and "corrupt member header" in str(error)
    assert error.lost_samples == 1 and not error.rest_unread


def test_corrupt_regions_are_read_past_and_each_counted():
    clean = writer_tar(8)
    data = bytearray(clean)
    for name in ("k1.txt", "k5.jpg"):
        data[header_offsets(clean, name)[1] + 136] ^= 0x01
    got, error = read_until_error(bytes(data))
    assert [s["__key__"] for s in got] == ["k0", "k2", "k3", "k4", "k6", "k7"]
    assert error.lost_samples == 2 and "1 more corrupt region" in str(error)
    # A header that is no longer a header at all (zeroed, or overwritten by junk) cannot say
    # whose member it was: both samples around it go, the shard's rest is still read.
    start = header_offsets(clean, "k4.jpg")[1]
    for junk in (bytes(512), b"\x5a" * 512):
        data = bytearray(clean)
        data[start:start + 512] = junk
        got, error = read_until_error(bytes(data))
        assert [s["__key__"] for s in got] == ["k0", "k1", "k2", "k5", "k6", "k7"]
        assert error.lost_samples == 2 and not error.rest_unread


def test_members_after_a_corrupt_header_are_read_then_an_error_raised():
    data = bytearray(members([("k0.jpg", b"a" * 600), ("k1.jpg", b"b" * 1100), ("k2.jpg", b"c")]))
    data[data.index(b"k1.jpg") + 136] ^= 0x01
    got = []
    with pytest.raises(TarFormatError, match="corrupt member header at byte 1536") as info:
        got.extend(iter_tar_members(io.BytesIO(bytes(data))))
    assert got == [("k0.jpg", b"a" * 600), ("k2.jpg", b"c")] and not info.value.rest_unread
    names = []  # read_data=False skips the same way
    with pytest.raises(TarFormatError, match="corrupt member header at byte 1536"):
        names.extend(name for name, _ in iter_tar_members(io.BytesIO(bytes(data)), read_data=False))
    assert names == ["k0.jpg", "k2.jpg"]
