"""The media downloader against a local server on 127.0.0.1: good files, never answering, 404, wrong hash, broken
off, huge, 503/429 then OK, redirects; a server that drips bytes slower than the deadline allows (body and
headers); resume, atomic files, stale temp files, https-only, TLS verification and no https -> http downgrade.

A server that "never answers" waits on an event that the fixture sets at teardown: no test waits on a clock."""

import hashlib
import http.server
import io
import ssl
import threading
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest

from nanomolmo2.formats.atomic import atomic_file
from nanomolmo2.prepare.download import CHUNK, Downloader, DownloadError, media_path

from .tls import make_certificates, server_context


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int, height: int, orientation: int | None = None, seed: int = 1) -> bytes:
    """A real JPEG; with `orientation`, its pixels are stored sideways and EXIF says how to turn them."""
    rng = np.random.default_rng(seed)
    image = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    exif = PIL.Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def mp4_bytes(folder: Path, width: int = 64, height: int = 48, frames: int = 10, fps: float = 5.0) -> bytes:
    path = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(frames):
        frame = np.full((height, width, 3), 20 * i, dtype=np.uint8)
        frame[:, : (i + 1) * width // frames] = (0, 0, 255)
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


DRIP = 0.001  # seconds between two bytes of a dripping server: 64 KiB take over a minute, the deadline is 0.5 s


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.routes[path]`: ("ok", body) | ("silent",) never answers | ("stall", body) half the body,
    then silence | ("drip",) an endless body, one byte at a time | ("drip-headers",) an endless header line |
    ("status", code) | ("broken", body) | ("huge", n, send_length) | ("flaky", code, failures, body) |
    ("redirect", url) | ("slow", body, pause) the whole body in four parts, `pause` seconds apart (a slow host
    that does answer). `server.sent[path]` counts the bytes of the drips that went out."""

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        self.server.hits[path] += 1
        route = self.server.routes.get(path, ("status", 404))
        kind = route[0]
        if kind == "ok":
            self._send(route[1])
        elif kind == "silent":  # nothing at all, until the test is over
            self.server.release.wait()
        elif kind == "stall":  # the headers and half the body, then silence until the test is over
            body = route[1]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.server.release.wait()
        elif kind in ("drip", "drip-headers"):  # never silent for long, never done
            if kind == "drip":
                self.send_response(200)  # no Content-Length: the body runs until the connection closes
                self.end_headers()
            else:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
            self.wfile.flush()
            while not self.server.release.wait(DRIP):
                self.wfile.write(b"a")
                self.wfile.flush()
                self.server.sent[path] += 1
        elif kind == "slow":
            body, pause = route[1], route[2]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            quarter = -(-len(body) // 4)
            for start in range(0, len(body), quarter):
                self.wfile.write(body[start : start + quarter])
                self.wfile.flush()
                if self.server.release.wait(pause):
                    return
        elif kind == "status":
            self.send_error(route[1])
        elif kind == "broken":  # promises twice the bytes it sends, then hangs up
            self._send(route[1], length=2 * len(route[1]))
            self.wfile.flush()
            self.close_connection = True
        elif kind == "huge":
            n, send_length = route[1], route[2]
            self.send_response(200)
            if send_length:
                self.send_header("Content-Length", str(n))
            self.end_headers()
            for _ in range(n // 65536):
                self.wfile.write(b"\0" * 65536)
        elif kind == "flaky":
            code, failures, body = route[1], route[2], route[3]
            if self.server.hits[path] <= failures:
                self.send_response(code)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(body)
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", route[1])
            self.send_header("Content-Length", "0")
            self.end_headers()


class MediaServer:
    """A threaded HTTP(S) server on 127.0.0.1 and a free port, serving `routes`; counts requests per path."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that gave up are expected here
        self.httpd.routes, self.httpd.hits, self.httpd.sent = {}, Counter(), Counter()
        self.httpd.release = threading.Event()  # set at close: handlers that "never answer" end then
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def routes(self) -> dict:
        return self.httpd.routes

    @property
    def hits(self) -> Counter:
        return self.httpd.hits

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @property
    def sent(self) -> Counter:
        return self.httpd.sent

    def close(self) -> None:
        self.httpd.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The test server is on 127.0.0.1: a proxy from the environment must not stand in between."""
    for name in ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    s = MediaServer()
    yield s
    s.close()


def quick_downloader(**kwargs) -> Downloader:
    """Short timeouts, one retry, tiny backoff: the tests stay fast. allow_http: the server is plain http."""
    options = dict(workers=4, timeout=0.5, read_timeout=0.5, retries=1, backoff=0.01, allow_http=True, progress=False)
    return Downloader(**(options | kwargs))


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix == ".part"]


def test_media_path_is_a_hash_of_the_url(tmp_path):
    a = media_path(tmp_path, "https://example.com/a/photo.JPG?size=large")
    assert a == media_path(tmp_path, "https://example.com/a/photo.JPG?size=large")  # the same URL, the same file
    digest = hashlib.sha256(b"https://example.com/a/photo.JPG?size=large").hexdigest()
    assert a == tmp_path / digest[:2] / f"{digest}.jpg"
    assert media_path(tmp_path, "https://example.com/page.php").suffix == ""  # not a media suffix: not kept
    assert media_path(tmp_path, "https://example.com/a.png") != media_path(tmp_path, "https://example.com/b.png")


def test_good_files_then_a_second_run_fetches_nothing(server, tmp_path):
    files = {"/a.png": png_bytes(40, 30), "/b.jpg": jpeg_bytes(32, 24), "/c.mp4": mp4_bytes(tmp_path)}
    server.routes.update({path: ("ok", body) for path, body in files.items()})
    folder = tmp_path / "media"
    jobs = [(server.url(p), media_path(folder, server.url(p)), sha256(body)) for p, body in files.items()]
    jobs.append((server.url("/a.png") + "?copy", media_path(folder, server.url("/a.png") + "?copy"), None))  # no hash
    report = quick_downloader().fetch_all(jobs)
    assert sorted(report.fetched) == sorted(url for url, _, _ in jobs) and not report.failed and not report.present
    for (_, path, _), body in zip(jobs, [*files.values(), files["/a.png"]], strict=True):
        assert path.read_bytes() == body
    hits = Counter(server.hits)

    again = quick_downloader().fetch_all(jobs)
    assert sorted(again.present) == sorted(url for url, _, _ in jobs) and not again.fetched and not again.failed
    assert server.hits == hits  # nothing was requested again
    assert again.summary().startswith("fetched 0, already present 4, failed 0")


def test_failures_are_final_or_retried_and_leave_no_file(server, tmp_path):
    good, other = png_bytes(20, 20), png_bytes(20, 20, seed=5)
    server.routes.update(
        {
            "/slow.png": ("silent",),
            "/wrong.png": ("ok", other),
            "/broken.png": ("broken", good),
            "/huge.bin": ("huge", 4 << 20, False),  # no Content-Length: the limit must hold while reading
            "/huge-declared.bin": ("huge", 4 << 20, True),
            "/busy.png": ("flaky", 503, 1, good),
            "/ratelimited.png": ("flaky", 429, 1, good),
        }
    )
    folder = tmp_path / "media"
    paths = ["/missing.png", "/slow.png", "/wrong.png", "/broken.png", "/huge.bin", "/huge-declared.bin"]
    paths += ["/busy.png", "/ratelimited.png"]
    jobs = [
        (server.url(p), media_path(folder, server.url(p)), sha256(good) if p != "/huge.bin" else None) for p in paths
    ]
    report = quick_downloader(max_bytes=1 << 20).fetch_all(jobs)

    assert sorted(report.fetched) == [server.url("/busy.png"), server.url("/ratelimited.png")]  # retry worked
    assert server.hits["/busy.png"] == 2 and server.hits["/ratelimited.png"] == 2
    reasons = {url.rsplit("/", 1)[1]: reason for url, reason in report.failed.items()}
    assert set(reasons) == {"missing.png", "slow.png", "wrong.png", "broken.png", "huge.bin", "huge-declared.bin"}
    assert reasons["missing.png"] == "HTTP 404" and server.hits["/missing.png"] == 1  # a 404 is not retried
    assert reasons["slow.png"].startswith("timeout") and server.hits["/slow.png"] == 2  # retried once, then given up
    assert reasons["wrong.png"].startswith("sha256 mismatch") and server.hits["/wrong.png"] == 1
    assert reasons["broken.png"].startswith("broken transfer") and server.hits["/broken.png"] == 2
    assert reasons["huge.bin"].startswith("too large: more than") and server.hits["/huge.bin"] == 1
    assert reasons["huge-declared.bin"].startswith("too large: Content-Length")
    for url, path, _ in jobs:  # a failed file is never kept, not even in part
        assert path.is_file() == (url in report.fetched)
    assert not leftovers(folder)
    assert report.summary().startswith("fetched 2, already present 0, failed 6")
    assert "1 x HTTP 404" in report.summary()


def test_urls_with_spaces_and_non_ascii_characters(server, tmp_path):
    body = png_bytes(8, 8)
    server.routes["/caf%C3%A9%20photo.png"] = ("ok", body)
    path = media_path(tmp_path, server.url("/café photo.png"))
    assert quick_downloader().fetch(server.url("/café photo.png"), path, sha256(body)) == "fetched"
    assert path.read_bytes() == body and path.suffix == ".png"
    with pytest.raises(DownloadError, match="HTTP 404"):  # control characters are escaped: no header injection
        quick_downloader().fetch(server.url("/a.png\r\nX-Injected: 1"), tmp_path / "x")
    assert "/a.png%0D%0AX-Injected:%201" in server.hits


def test_a_stalled_body_hits_the_read_timeout(server, tmp_path):
    body = png_bytes(64, 64)
    server.routes["/stall.png"] = ("stall", body)
    path = tmp_path / "stall.png"
    with pytest.raises(DownloadError, match="timeout"):
        quick_downloader(retries=0).fetch(server.url("/stall.png"), path, sha256(body))
    assert not path.exists() and not leftovers(tmp_path)


def test_a_wrong_existing_file_is_fetched_again(server, tmp_path):
    body = png_bytes(16, 16)
    server.routes["/a.png"] = ("ok", body)
    path = tmp_path / "a.png"
    path.write_bytes(b"an older, different file")
    assert quick_downloader().fetch(server.url("/a.png"), path, sha256(body)) == "fetched"
    assert path.read_bytes() == body
    assert quick_downloader().fetch(server.url("/a.png"), path, sha256(body)) == "present"


def test_only_https_and_loopback_http_for_tests(server, tmp_path):
    server.routes["/a.png"] = ("ok", png_bytes(8, 8))
    with pytest.raises(DownloadError, match="refused URL"):  # the default: http is refused, even on loopback
        Downloader(progress=False).fetch(server.url("/a.png"), tmp_path / "a.png")
    for url in [
        "http://example.com/a.png",
        "file:///etc/passwd",
        "ftp://x.org/a.png",
        "https:///nohost",
        "https://[::1",
    ]:
        with pytest.raises(DownloadError, match="refused URL"):  # allow_http admits loopback hosts only
            quick_downloader().fetch(url, tmp_path / "x")
    assert server.hits["/a.png"] == 0

    # Redirects: followed to a URL the downloader would fetch itself, refused otherwise (no downgrade).
    server.routes["/to-local"] = ("redirect", server.url("/a.png"))
    server.routes["/to-remote-http"] = ("redirect", "http://example.com/a.png")
    server.routes["/to-file"] = ("redirect", "file:///etc/passwd")
    assert quick_downloader().fetch(server.url("/to-local"), tmp_path / "a.png") == "fetched"
    for path in ["/to-remote-http", "/to-file"]:
        with pytest.raises(DownloadError, match="refused"):
            quick_downloader().fetch(server.url(path), tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("route", ["drip", "drip-headers"])
def test_a_slow_drip_ends_at_the_deadline(server, tmp_path, route):
    """A server that sends a byte every millisecond is never silent long enough for the read timeout (30 s here);
    the attempt's deadline (0.5 s) must end it on the next read, in the body as in the headers, long before the
    first 64 KiB read would complete (checking the deadline only between full reads lets it run for minutes)."""
    server.routes["/drip.png"] = (route,)
    path = tmp_path / "drip.png"
    with pytest.raises(DownloadError, match="timeout: not done after 0.5 s"):
        quick_downloader(read_timeout=30, deadline=0.5, retries=0).fetch(server.url("/drip.png"), path)
    assert server.sent["/drip.png"] < CHUNK  # cut off long before a 64 KiB read could complete
    assert not path.exists() and not leftovers(tmp_path)


def test_a_killed_runs_temp_files_are_swept_but_not_a_live_writers(server, tmp_path):
    body = png_bytes(8, 8)
    server.routes["/a.png"] = ("ok", body)
    path = media_path(tmp_path, server.url("/a.png"))
    path.parent.mkdir(parents=True)
    stale = path.parent / f".{path.name}.dead.part"  # what a SIGKILLed download leaves
    stale.write_bytes(b"half a file")
    with atomic_file(path.parent / "other.png") as live:  # another download, still being written
        live.write(b"in progress")
        report = quick_downloader().fetch_all([(server.url("/a.png"), path, sha256(body))])
        assert report.fetched == [server.url("/a.png")]
        assert not stale.exists() and len(leftovers(tmp_path)) == 1  # the live one is still there
    assert (path.parent / "other.png").read_bytes() == b"in progress" and not leftovers(tmp_path)


@pytest.fixture
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_tls_certificates_are_verified(tmp_path, certificates):
    """A server whose certificate no trusted authority signed is refused: verification is on and cannot be turned
    off (the certificate is made in Python: the test never depends on an `openssl` command)."""
    _, cert, key = certificates
    tls_server = MediaServer(tls=server_context(cert, key))
    try:
        tls_server.routes["/a.png"] = ("ok", png_bytes(8, 8))
        with pytest.raises(DownloadError, match="TLS verification failed"):
            quick_downloader(allow_http=False, retries=2).fetch(tls_server.url("/a.png"), tmp_path / "a.png")
        assert tls_server.hits["/a.png"] == 0 and not (tmp_path / "a.png").exists()  # no request, no retry
    finally:
        tls_server.close()


def test_no_downgrade_from_a_real_https_origin(server, tmp_path, certificates, monkeypatch):
    """From a verified https origin, a redirect to http is refused, even to the loopback http that allow_http
    admits for the tests; a redirect to https is followed."""
    ca, cert, key = certificates
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the test authority is the only one trusted
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    tls_server = MediaServer(tls=server_context(cert, key))
    try:
        body = png_bytes(8, 8)
        server.routes["/a.png"] = tls_server.routes["/a.png"] = ("ok", body)
        tls_server.routes["/down"] = ("redirect", server.url("/a.png"))
        tls_server.routes["/across"] = ("redirect", tls_server.url("/a.png"))
        downloader = quick_downloader()  # allow_http: loopback http is admitted as a first URL
        assert downloader.fetch(tls_server.url("/a.png"), tmp_path / "direct.png", sha256(body)) == "fetched"
        assert downloader.fetch(tls_server.url("/across"), tmp_path / "across.png", sha256(body)) == "fetched"
        with pytest.raises(DownloadError, match="refused redirect: https to http"):
            downloader.fetch(tls_server.url("/down"), tmp_path / "down.png")
        assert server.hits["/a.png"] == 0 and not (tmp_path / "down.png").exists()
    finally:
        tls_server.close()
