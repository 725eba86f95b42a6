"""The raw samples of each shard in turn, counting what a missing, unreadable or cut shard loses."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from .shards import is_remote
from .skip_accounting import SkipCounter, WorkerMessages
from .tar_reader import BLOCK, TarFormatError, is_plain_tar, iter_tar_samples


class ShardReader:
    """Raw samples of shards: plain local tars through the fast reader, the rest through webdataset.

    With ``fast_tar_reader=False`` every shard goes through webdataset's tarfile path. Failing
    shards are counted in `counter` and reported, for the main process's log, in `messages`.
    """

    def __init__(self, counter: SkipCounter, messages: WorkerMessages, fast_tar_reader: bool = True) -> None:
        self.counter = counter
        self.messages = messages
        self.fast_tar_reader = fast_tar_reader

    def samples(self, shards: Iterator[dict], visited: set[str],
                shard_size: float | None) -> Iterator[dict[str, Any]]:
        """The samples of each shard in turn, adding each shard's url to `visited` as it is opened.

        `shard_size` is the mean number of samples per shard of their source as counted from tar
        headers (None: not counted), to estimate how many samples a shard that breaks off takes with it.
        """
        for shard in shards:
            visited.add(shard["url"])
            if self.fast_tar_reader and not is_remote(shard["url"]):
                yield from self._local_samples(shard["url"], shard_size)
            else:
                yield from self._webdataset_samples(shard["url"], shard_size)

    def _local_samples(self, path: str, shard_size: float | None) -> Iterator[dict[str, Any]]:
        """A local shard through the fast ustar reader, or through webdataset if it is not one."""
        seen = 0  # samples read or dropped so far

        def dropped(count: int, reason: str) -> None:  # corrupt regions, read past
            nonlocal seen
            seen += count
            self._shard_failed("tar_error", path, reason, count)

        try:
            with open(path, "rb") as stream:
                if is_plain_tar(stream):
                    for sample in iter_tar_samples(stream, path, on_dropped=dropped):
                        seen += 1
                        yield sample
                    return
        except FileNotFoundError as exn:
            self._shard_failed("missing_shard", path, repr(exn))
            return
        except TarFormatError as exn:  # a cut, or a duplicate name (which loses no sample)
            rest = _lost_with_rest(shard_size, seen) if exn.rest_unread else 0
            self._shard_failed("tar_error", path, str(exn), rest, estimated=exn.rest_unread)
            return
        except OSError as exn:
            rest = _lost_with_rest(shard_size, seen)
            self._shard_failed("tar_error", path, repr(exn), rest, estimated=True)
            return
        yield from self._webdataset_samples(path, shard_size)  # compressed or pre-POSIX tar, or not a tar

    def _webdataset_samples(self, url: str, shard_size: float | None) -> Iterator[dict[str, Any]]:
        """wds.tarfile_to_samples of one shard, counting a shard that fails or is cut once it is read.

        tarfile cannot read past a corrupt header: whatever breaks a shard here ends it, and the
        samples lost with its rest are estimated (_lost_with_rest).
        """
        errors: list[Exception] = []

        def handler(exn: Exception) -> bool:
            errors.append(exn)
            return True

        tails: list[_TarTail] = []
        read = 0
        opened = _tailed(url_opener([{"url": url}], handler=handler), tails, errors)
        for sample in group_by_keys(tar_file_expander(opened, handler=handler), handler=handler):
            read += 1
            yield sample
        truncated = any(tail.truncated for tail in tails)
        if not errors and not truncated:
            return
        detail = repr(errors[0]) if errors else "truncated tar"
        if not tails and isinstance(errors[0], FileNotFoundError):
            self._shard_failed("missing_shard", url, detail)
        else:
            self._shard_failed("tar_error", url, detail, _lost_with_rest(shard_size, read), estimated=True)

    def _shard_failed(self, kind: str, url: str, reason: str, lost: int = 1, estimated: bool = False) -> None:
        """Count a failing shard (missing_shard: once; tar_error: `lost` samples); report it for the log.

        tar_error counts the samples dropped around each corrupt region of a plain tar as it is
        read past (see tar_reader.iter_tar_samples), and where a shard broke off, an estimate of
        the samples that followed (_lost_with_rest); a duplicate file name loses none but is
        still reported.
        """
        self.counter.add(kind, f"{url}: {reason}", lost)
        if kind == "missing_shard":
            self.messages.put(f"shard {url}: missing ({reason})")
        else:
            note = " (estimated: the rest of the shard could not be read)" if estimated else ""
            self.messages.put(f"shard {url}: {kind}, {lost} sample(s) lost{note}: {reason}")


class _TarTail:
    """Read-through proxy that remembers a tar stream's first and last block.

    Python's tarfile treats a file cut inside a member header as a normal end of archive; an
    uncompressed tar that really ended has zero blocks at its end, which this tells apart.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.head = b""
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if len(self.head) < BLOCK:
            self.head += data[:BLOCK - len(self.head)]
        if len(data) >= BLOCK:
            self.tail = data[-BLOCK:]
        elif data:
            self.tail = (self.tail + data)[-BLOCK:]
        return data

    def close(self) -> None:
        self.stream.close()

    @property
    def truncated(self) -> bool:
        plain_tar = self.head[257:262] == b"ustar"  # compressed shards have no checkable tail
        return plain_tar and self.tail != bytes(BLOCK)


def _tailed(sources: Iterator[dict], tails: list[_TarTail], errors: list[Exception]) -> Iterator[dict]:
    """Opened shards with their stream wrapped in a _TarTail (kept in `tails`), each closed once consumed."""
    for source in sources:
        tail = source["stream"] = _TarTail(source["stream"])
        tails.append(tail)
        try:
            yield source
        finally:
            try:
                tail.close()
            except OSError as exn:  # e.g. a pipe: command that exited with an error status
                errors.append(exn)


def _lost_with_rest(shard_size: float | None, seen: int) -> int:
    """Samples counted lost when a shard breaks off after `seen` of its samples were read or dropped.

    How many followed cannot be known. Estimated as the mean size of the shards of its source
    that the builder counted from tar headers without error, less those seen, and at least one;
    one where none was counted (remote shards).
    """
    return 1 if shard_size is None else max(1, round(shard_size - seen))
