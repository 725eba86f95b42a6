import io
import tarfile

import pytest
import webdataset as wds

from diffengine.datasets.tar_reader import TarFormatError, is_tar_header, iter_tar_members, iter_tar_samples

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


def test_every_cut_raises_and_yields_only_whole_members():
    data = members([(f"k{i}.{ext}", bytes([i + 1]) * (300 + 200 * i)) for i in range(3) for ext in ("jpg", "txt")])
    whole = list(iter_tar_samples(io.BytesIO(data), "shard"))
    end = -(-len(data.rstrip(b"\0")) // 512) * 512  # where the end-of-archive blocks start
    for cut in range(0, end + 512, 97):
        stream, got = io.BytesIO(data[:cut]), []
        with pytest.raises(TarFormatError):
            got.extend(iter_tar_samples(stream, "shard"))
        # a sample comes out with the members read whole, never with partial bytes
        assert all(s == {k: v for k, v in w.items() if k in s} for s, w in zip(got, whole))
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


def test_member_type_it_cannot_skip_is_an_error():
    data = members([("k0.jpg", b"a")], tarfile.GNU_FORMAT, [entry("sparse.bin", tarfile.GNUTYPE_SPARSE)])
    with pytest.raises(TarFormatError, match="cannot skip"):
        list(iter_tar_members(io.BytesIO(data)))
