"""Fetching the images and videos that dataset tables point to: safe, bounded, resumable.

    downloader = Downloader(workers=16)
    report = downloader.fetch_all([(url, media_path(folder, url), sha256_or_None), ...])
    print(report.summary())   # fetched / already present / failed, with reasons

- **https only, TLS verified.** Certificates and host names are always checked (`ssl.create_default_context`);
  there is no switch to turn that off. Redirects are followed only to https URLs, and never from https to
  anything else. `allow_http` exists for the tests alone, which serve files from a plain-http server on
  127.0.0.1: it admits http for loopback hosts only.
- **Bounded.** A thread pool of `workers`; a connect timeout (up to the response headers), a read timeout
  (silence between bytes) and a deadline per attempt, enforced on every read of the socket, headers included:
  each read waits at most min(timeout, time left), so a server that drips one byte at a time cannot hold a
  worker past the deadline. At most `max_bytes` per file, checked against Content-Length and again while
  reading (a server may send no length, or lie).
- **Retries** with exponential backoff and jitter on connection errors, timeouts, broken transfers, HTTP 5xx
  and 429 (honouring a short Retry-After). Other 4xx (404, 403, ...), a hash mismatch, a file over the size
  limit and a refused URL are final: asking again would give the same answer.
- **Resume.** A file is named by the sha256 of its URL (`media_path`), so a second run finds what the first
  one fetched. Files appear only complete: bytes go to a temp file in the same folder, fsynced, then renamed
  (formats/atomic.py); the temp files a killed run left are swept by the next one. An existing file counts as
  present (and when the dataset gives a sha256, only if its hash matches).
- **Checked.** When a sha256 is given the bytes must hash to it; a mismatch is rejected and not kept.

Only the standard library is used for HTTP (urllib).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import random
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..formats.atomic import PART, atomic_file, sweep_stale

USER_AGENT = "nanomolmo2-downloader/0.1 (+https://github.com/allenai/molmo2 datasets)"
CHUNK = 1 << 16
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
MEDIA_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".mp4", ".webm", ".mkv", ".mov"}
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is treated as "not now" and capped


class DownloadError(Exception):
    """A final failure: retrying would not help (404, hash mismatch, too large, refused URL)."""


class RetryableError(Exception):
    """A failure that may go away: connection error, timeout, broken transfer, 5xx, 429."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def media_path(folder: str | Path, url: str) -> Path:
    """Where the file of `url` lives: folder/ab/<sha256 of the URL><suffix>, the suffix kept only when it is a
    known media suffix (so the name never depends on the bytes, and two folders levels keep listings small)."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
    suffix = Path(urllib.parse.urlsplit(url).path).suffix.lower()
    return Path(folder) / digest[:2] / (digest + (suffix if suffix in MEDIA_SUFFIXES else ""))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class DownloadReport:
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # url -> reason

    def summary(self, examples: int = 3) -> str:
        lines = [f"fetched {len(self.fetched)}, already present {len(self.present)}, failed {len(self.failed)}"]
        reasons = Counter(reason.split(":")[0] for reason in self.failed.values())
        for reason, n in reasons.most_common():
            urls = [u for u, r in self.failed.items() if r.split(":")[0] == reason][:examples]
            lines.append(f"  {n} x {reason}  (e.g. {', '.join(urls)})")
        return "\n".join(lines)


class DeadlinePassed(TimeoutError):
    """The attempt's deadline passed while reading (headers or body)."""


def _describe(error: object) -> str:
    if isinstance(error, DeadlinePassed):
        return f"timeout: {error}"
    if isinstance(error, TimeoutError):
        return "timeout: no answer within the time limit"
    return f"connection error: {type(error).__name__} {error}".rstrip()


class _Deadline:
    """The end of one attempt: `left()` is the time that remains, DeadlinePassed once there is none."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise DeadlinePassed(f"not done after {self.seconds:g} s")
        return left


class _DeadlineReader(io.RawIOBase):
    """A socket's reads as http.client makes them (status line, headers, body), each waiting at most
    min(timeout, time left before the deadline): the deadline holds on every read, not between chunks."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, timeout: float) -> None:
        self._sock, self._raw, self._deadline = sock, sock.makefile("rb", buffering=0), deadline
        self.timeout = timeout  # the connect timeout for the headers; the downloader sets its read timeout after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._deadline.left()
        self._sock.settimeout(min(self.timeout, left))
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            if left < self.timeout:  # the wait was cut short by the deadline, not ended by silence
                raise DeadlinePassed(f"not done after {self._deadline.seconds:g} s") from None
            raise

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """A connected socket whose files (what http.client reads the response from) are _DeadlineReaders."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, timeout: float) -> None:
        self._sock, self._deadline, self._timeout = sock, deadline, timeout

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline, self._timeout))

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _DeadlineConnection:
    """Connecting (and the TLS handshake) waits at most the time left; then every read is a _DeadlineReader's."""

    def __init__(self, *args, deadline: _Deadline, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        self.timeout = min(self.timeout, self._deadline.left())
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self._deadline, self.timeout)


class _HTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, deadline: _Deadline) -> None:
        super().__init__(context=context)
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPSConnection, deadline=self._deadline), req, context=self._context)


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the downloader would fetch itself, and never from https to anything else
    (not even to the loopback http that `allow_http` admits for the tests)."""

    max_redirections = 5

    def __init__(self, check) -> None:
        self.check = check

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme
        if urllib.parse.urlsplit(req.full_url).scheme == "https" and scheme != "https":
            raise DownloadError(f"refused redirect: https to {scheme or 'a relative URL'} ({newurl[:200]})")
        self.check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass
class Downloader:
    workers: int = 16
    timeout: float = 10.0  # connect and wait for the response headers
    read_timeout: float = 30.0  # longest silence while reading the body
    deadline: float = 600.0  # longest time for one attempt at one file (a slow trickle ends here)
    retries: int = 3  # attempts after the first
    backoff: float = 1.0  # first retry waits about this long, then 2x, 4x, ...
    max_bytes: int = 64 << 20
    allow_http: bool = False  # tests only: plain http to 127.0.0.1 / localhost
    progress: bool = True

    def __post_init__(self) -> None:
        self.tls = ssl.create_default_context()  # verifies certificates and host names

    def opener(self, deadline: _Deadline) -> urllib.request.OpenerDirector:
        """The handlers of one attempt (its connections share its deadline). Only those needed: no file://,
        ftp:// or data: URLs can ever be opened."""
        handlers = [
            urllib.request.ProxyHandler(),
            _HTTPSHandler(self.tls, deadline),
            _HttpsOnlyRedirects(self.check_url),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
        ]
        if self.allow_http:
            handlers.append(_HTTPHandler(deadline))
        opener = urllib.request.OpenerDirector()
        for handler in handlers:
            opener.add_handler(handler)
        return opener

    def check_url(self, url: str) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            scheme, host = parts.scheme, parts.hostname
        except ValueError as e:  # e.g. a broken IPv6 literal
            raise DownloadError(f"refused URL: {e} ({url[:200]})") from None
        if scheme == "https" and host:
            return
        if self.allow_http and scheme == "http" and host in LOOPBACK:
            return
        raise DownloadError(f"refused URL: only https is fetched ({url[:200]})")

    def fetch(self, url: str, path: str | Path, sha256: str | None = None) -> str:
        """Make `path` hold the bytes of `url`: "present" or "fetched"; raises DownloadError with the reason."""
        path, sha256 = Path(path), sha256.lower() if sha256 else None
        self.check_url(url)
        if path.is_file() and (sha256 is None or file_sha256(path) == sha256):
            return "present"
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            try:
                self._get(url, path, sha256)
                return "fetched"
            except RetryableError as e:
                if attempt == self.retries:
                    raise DownloadError(f"{e} (gave up after {attempt + 1} attempts)") from None
                delay = self.backoff * 2**attempt * random.uniform(0.5, 1.5)  # jitter: threads don't retry in step
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, MAX_RETRY_AFTER))
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _open(self, url: str, deadline: _Deadline) -> http.client.HTTPResponse:
        # Dataset URLs may hold spaces or non-ASCII characters: percent-encode them (existing escapes stay).
        url = urllib.parse.quote(url, safe="%/:=&?~#+!$,;'@()*[]")
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            return self.opener(deadline).open(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            headers = e.headers or {}
            retry_after, location = headers.get("Retry-After", ""), headers.get("Location", "?")
            e.close()
            if e.code == 429 or e.code >= 500:
                raise RetryableError(f"HTTP {e.code}", float(retry_after) if retry_after.isdigit() else None) from None
            if 300 <= e.code < 400:  # urllib refuses redirects to schemes other than http(s) / ftp
                raise DownloadError(f"refused redirect: HTTP {e.code} to {location}") from None
            raise DownloadError(f"HTTP {e.code}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):  # a bad certificate stays bad
                raise DownloadError(f"TLS verification failed: {e.reason}") from None
            if isinstance(e.reason, socket.gaierror) and e.reason.errno == socket.EAI_NONAME:  # no such host
                raise DownloadError(f"connection error: unknown host ({e.reason})") from None
            raise RetryableError(_describe(e.reason)) from None
        except ValueError as e:  # http.client.InvalidURL and the like
            raise DownloadError(f"refused URL: {e}") from None
        except OSError as e:  # TimeoutError, ConnectionError, ssl.SSLError while connecting or reading headers
            raise RetryableError(_describe(e)) from None
        except http.client.HTTPException as e:
            raise RetryableError(_describe(e)) from None

    def _get(self, url: str, path: Path, sha256: str | None) -> None:
        deadline = _Deadline(self.deadline)  # the whole attempt: connecting, headers, redirects, body
        with self._open(url, deadline) as response:
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if length is not None and length > self.max_bytes:
                raise DownloadError(f"too large: Content-Length {length} > limit {self.max_bytes} bytes")
            # The connect timeout covered the headers; the body gets its own read timeout (the deadline stays).
            reader = getattr(response.fp, "raw", None)
            if isinstance(reader, _DeadlineReader):
                reader.timeout = self.read_timeout
            try:
                with atomic_file(path) as f:  # the file appears complete and checked, or not at all
                    digest, total = hashlib.sha256(), 0
                    while chunk := response.read1(CHUNK):  # what one read of the socket brought
                        total += len(chunk)
                        if total > self.max_bytes:
                            raise DownloadError(f"too large: more than the limit of {self.max_bytes} bytes")
                        digest.update(chunk)
                        f.write(chunk)
                    if length is not None and total != length:  # http.client returns b"" when the peer hangs up
                        raise RetryableError(f"broken transfer: {total} of {length} bytes")
                    if sha256 is not None and digest.hexdigest() != sha256:
                        raise DownloadError(f"sha256 mismatch: got {digest.hexdigest()}, expected {sha256}")
            except (TimeoutError, ConnectionError, ssl.SSLError, http.client.HTTPException) as e:
                raise RetryableError(_describe(e)) from None

    def fetch_all(self, jobs: list[tuple[str, Path, str | None]]) -> DownloadReport:
        """Fetch (url, path, sha256 or None) jobs in parallel; one entry per URL in the report."""
        report = DownloadReport()
        for folder in sorted({Path(path).parent for _, path, _ in jobs}):
            if folder.is_dir():  # temp files of a killed run (a live one's are locked, and left alone)
                sweep_stale(folder, f".*{PART}")
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            futures = {pool.submit(self.fetch, url, path, sha): url for url, path, sha in jobs}
            show = self.progress and sys.stderr.isatty()
            for future in tqdm(as_completed(futures), total=len(futures), disable=not show, desc="download"):
                url = futures[future]
                try:
                    (report.fetched if future.result() == "fetched" else report.present).append(url)
                except DownloadError as e:
                    report.failed[url] = str(e)
                except OSError as e:  # the disk: full, permissions
                    report.failed[url] = f"write error: {e}"
                except Exception as e:  # one odd URL or response never stops the others
                    report.failed[url] = f"error: {type(e).__name__}: {e}"
        return report
