# EMS_CLIENT, the client library of the Exasol UDFs that `exasol-mlflow-server udf` generates
# (docs/exasol.md). Each model's SET and SCALAR scripts hold only their settings and call
# Udf(exa, SETTINGS).run(ctx); the code is here, once per schema, loaded with exa.import_script.
# Python 3.8+ (Exasol 7.1), needs only requests (shipped by Exasol's script-language containers).
#
# Part 1, HTTP: POST a batch to the server's /invocations with (connect, read) timeouts, retries
# with backoff and failover over the connection's URLs, and a circuit breaker per URL, so that a
# dead, hung or overloaded server costs a query about one timeout, not one per batch.

import json
import os
import random
import tempfile
import time
import zlib
from typing import Any, Dict, List, Optional

import requests

API_VERSION = 1  # the scripts check it: an old library with new scripts fails clearly
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PROBE_FIRST = 1.0  # seconds an open breaker waits before probing; doubles while it fails
PROBE_MAX = 30.0
MAX_BACKOFF = 10.0
MAX_RETRY_AFTER = 30.0
MAX_MESSAGE = 1000  # characters of a server message kept in error_message

_SESSION = None  # one per VM: connections are kept alive across batches, groups and scripts
_CA_FILES = {}  # type: Dict[str, str]


def session() -> requests.Session:
    global _SESSION
    if _SESSION is None:
        _SESSION = requests.Session()
        _SESSION.trust_env = False  # no proxy or .netrc credentials from the environment
        _SESSION.headers["User-Agent"] = f"exasol-mlflow-server-udf/{API_VERSION}"
    return _SESSION


class ServerError(Exception):
    """A request that gave no predictions; ``message`` goes into error_message.

    ``retryable``: another try may succeed (no connection, read timeout, 429, 5xx);
    ``splittable``: a smaller batch may (a 400 for some row, 413); ``hung``: the server took the
    request and did not answer in time, which opens that URL's breaker at once.
    """

    def __init__(self, message: str, status: Optional[int] = None, **flags: Any) -> None:
        super().__init__(message)
        self.message, self.status = message, status
        self.retryable = bool(flags.get("retryable", False))
        self.splittable = bool(flags.get("splittable", False))
        self.hung = bool(flags.get("hung", False))
        self.retry_after = flags.get("retry_after")  # type: Optional[float]


def parse_urls(address: Optional[str]) -> List[str]:
    """``http://a:5000, http://b:5000`` -> the /invocations URLs, in order."""
    urls = []
    for part in (address or "").replace("\n", ",").replace(";", ",").split(","):
        url = part.strip()
        if not url:
            continue
        if "://" not in url:
            url = "http://" + url
        scheme, rest = url.split("://", 1)
        if "@" in rest.split("/", 1)[0]:  # never echo such a URL: it holds a secret
            raise RuntimeError("E-EMS-UDF-2: put the token into IDENTIFIED BY, not into the URL")
        if scheme.lower() not in ("http", "https"):
            raise RuntimeError(f"E-EMS-UDF-2: {url!r} is not an http(s) URL")
        url = url.rstrip("/")
        if not url.endswith("/invocations"):
            url += "/invocations"
        urls.append(url)
    return urls


def tls_verify(settings: Dict[str, Any]) -> Any:
    """requests' ``verify``: False, True (the container's CAs) or a CA bundle file."""
    if not settings["tls_verify"]:
        requests.packages.urllib3.disable_warnings()  # chosen: do not warn on every request
        return False
    if settings.get("ca_path"):
        return settings["ca_path"]  # a file the UDF VM can read, e.g. in BucketFS
    pem = settings.get("ca_pem")
    if not pem:
        return True
    if pem not in _CA_FILES:  # embedded PEM: requests needs a file
        handle, path = tempfile.mkstemp(prefix="ems-ca-", suffix=".pem")
        with os.fdopen(handle, "w") as out:
            out.write(pem)
        _CA_FILES[pem] = path
    return _CA_FILES[pem]


class Breaker:
    """One server URL: closed; open after ``threshold`` lost attempts in a row (1 + retries: a
    batch that used up its retries there; at once after a read timeout); while open no request is sent, and after ``wait`` seconds one probe (GET
    /ping within the connect timeout) decides: an answer lets attempts through again (half open:
    the next lost attempt reopens it, a success closes it), no answer doubles the wait."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.lost = 0
        self.probe_at = None  # type: Optional[float]  # None: not open
        self.wait = PROBE_FIRST
        self.reason = ""

    def success(self) -> None:
        self.lost, self.probe_at, self.wait = 0, None, PROBE_FIRST

    def failure(self, err: ServerError) -> None:
        self.lost += 1
        if err.hung or self.lost >= self.threshold:
            self.trip(err.message)

    def trip(self, reason: str) -> None:
        self.probe_at = time.monotonic() + self.wait
        self.wait = min(PROBE_MAX, self.wait * 2)
        self.reason = reason


def _retry_after(resp: requests.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


def _error_details(resp: requests.Response) -> "tuple":
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("message" in body or "error_code" in body):
        return str(body.get("error_code") or ""), str(body.get("message") or "")
    return "", resp.text.strip()[:200]


class ModelClient:
    """POSTs one batch with retries, backoff and failover; one breaker per URL."""

    def __init__(self, urls: List[str], token: Optional[str], seed: int, settings: Dict) -> None:
        self.urls = urls
        self.current = seed % len(urls)  # spread the VMs over the servers
        self._token = token
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = "Bearer " + token
        self.connect, self.read = float(settings["connect_timeout"]), float(settings["timeout"])
        self.retries = max(0, int(settings["retries"]))
        self.breakers = {url: Breaker(max(2, 1 + self.retries)) for url in urls}
        self.backoff = float(settings["backoff"])
        self.verify = tls_verify(settings)

    def scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def invoke(self, body: bytes, n_rows: int) -> List[Any]:
        last = None  # type: Optional[ServerError]
        attempts, last_url = 0, ""
        for attempt in range(1 + self.retries):
            if last is not None:
                if all(b.probe_at is not None for b in self.breakers.values()):
                    break  # every server is open: fail now, not after more timeouts
                time.sleep(self.delay(attempt, last))
            url = self.server()
            if url is None:
                break
            attempts += 1
            try:
                predictions = self.post(url, body, n_rows)
            except ServerError as err:
                err.message = self.scrub(err.message)
                if not err.retryable:
                    self.breakers[url].success()  # the server answered
                    raise
                self.breakers[url].failure(err)
                last, last_url = err, url
                self.current = (self.current + 1) % len(self.urls)  # fail over
                continue
            self.breakers[url].success()
            return predictions
        if last is None:
            reasons = "; ".join(sorted({b.reason for b in self.breakers.values()}))
            raise ServerError(
                "not sent: no server is available (circuit open after failed requests; "
                f"last error: {reasons})"
            )
        plural = "s" if attempts > 1 else ""
        tripped = "; circuit open" if self.breakers[last_url].probe_at is not None else ""
        last.message += f" (gave up after {attempts} attempt{plural}{tripped})"
        last.retryable = False
        raise last

    def server(self) -> Optional[str]:
        """The URL for the next attempt: the current one or the next whose breaker lets requests
        through (probing those whose wait is over), None when every breaker is open."""
        for _ in range(len(self.urls)):
            url = self.urls[self.current]
            breaker = self.breakers[url]
            if breaker.probe_at is None:
                return url
            if time.monotonic() >= breaker.probe_at:
                if self.probe(url):
                    breaker.probe_at = None  # half open: breaker.lost stays at the threshold
                    return url
                breaker.trip(breaker.reason)
            self.current = (self.current + 1) % len(self.urls)
        return None

    def probe(self, url: str) -> bool:
        ping = url[: -len("/invocations")] + "/ping"
        try:
            resp = session().get(
                ping,
                headers=self.headers,
                timeout=(self.connect, self.connect),
                allow_redirects=False,
                verify=self.verify,
            )
        except requests.exceptions.RequestException:
            return False
        return resp.status_code < 500

    def delay(self, attempt: int, err: ServerError) -> float:
        if err.retry_after is not None:
            return min(err.retry_after, MAX_RETRY_AFTER) + random.uniform(0, 0.1)
        cap = min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))
        return cap / 2 + random.uniform(0, cap / 2)

    def post(self, url: str, body: bytes, n_rows: int) -> List[Any]:
        try:
            resp = session().post(
                url,
                data=body,
                headers=self.headers,
                timeout=(self.connect, self.read),
                allow_redirects=False,
                verify=self.verify,
            )
        except requests.exceptions.RequestException as exc:
            raise self.transport_error(url, exc) from None
        status = resp.status_code
        if status == 200:
            return self.predictions(resp, url, n_rows)
        code, message = _error_details(resp)
        text = f"HTTP {status}{' ' + code if code else ''} from {url}: {message}"
        lower = message.lower()  # a params error fails every batch alike: do not bisect it
        param_error = code == "INVALID_PARAMETER_VALUE" and "param" in lower and "row" not in lower
        raise ServerError(
            text[: MAX_MESSAGE + 100],
            status=status,
            retryable=status in RETRY_STATUSES,
            splittable=status == 413 or (status == 400 and not param_error),
            retry_after=_retry_after(resp) if status in (429, 503) else None,
        )

    def transport_error(self, url: str, exc: Exception) -> ServerError:
        if isinstance(exc, requests.exceptions.SSLError):
            return ServerError(
                f"TLS error with {url}: {exc} (a private CA: generate the scripts with --ca-bundle or "
                "--ca-bundle-path)"
            )
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            message = f"cannot connect to {url}: no answer within {self.connect}s"
            return ServerError(message, retryable=True)
        if isinstance(exc, requests.exceptions.Timeout):  # connected, but no answer in time
            message = f"no response from {url} within {self.read}s (read timeout)"
            return ServerError(message, retryable=True, hung=True)
        message = f"cannot reach {url}: {type(exc).__name__}: {exc}"
        return ServerError(message, retryable=True)

    @staticmethod
    def predictions(resp: requests.Response, url: str, n_rows: int) -> List[Any]:
        try:
            data = resp.json()
        except ValueError:
            raise ServerError(f"HTTP 200 from {url} but the body is not JSON") from None
        predictions = data.get("predictions") if isinstance(data, dict) else None
        if not isinstance(predictions, list) or len(predictions) != n_rows:
            got = len(predictions) if isinstance(predictions, list) else type(predictions).__name__
            raise ServerError(
                f"unexpected response from {url}: {got} predictions for {n_rows} rows"
            )
        return predictions


def make_client(exa: Any, settings: Dict[str, Any]) -> ModelClient:
    name, meta = settings["connection"], getattr(exa, "meta", None)
    script = "{}.{}".format(
        getattr(meta, "script_schema", "<schema>"), getattr(meta, "script_name", "?")
    )
    grant = f"GRANT ACCESS ON CONNECTION {name} FOR SCRIPT {script} TO <user or role>"
    try:
        conn = exa.get_connection(name)
    except Exception as exc:  # ImportError in Exasol, KeyError in the mock
        raise RuntimeError(
            f"E-EMS-UDF-1: cannot use connection {name} ({type(exc).__name__}: {exc}). Create it with CREATE CONNECTION {name} "
            "TO 'http://<host>:<port>' USER '' IDENTIFIED BY '<token>'; and allow this script to "
            f"use it: {grant};"
        ) from None
    urls = parse_urls(getattr(conn, "address", None))
    if not urls:
        raise RuntimeError(f"E-EMS-UDF-2: connection {name} has no server URL in its address")
    token = (getattr(conn, "password", None) or "").strip() or None
    vm_id = getattr(meta, "vm_id", None)
    seed = zlib.crc32(str(vm_id).encode()) if vm_id is not None else random.randrange(1 << 30)
    return ModelClient(urls, token, seed, settings)


def request_body(columns: List[str], rows: List[bytes], params: Dict[str, Any]) -> bytes:
    """The /invocations JSON from rows already encoded as JSON arrays (see rows.Row)."""
    head = f'{{"dataframe_split":{{"columns":{json.dumps(columns)},"data":['
    tail = "]}" + (f',"params":{json.dumps(params, allow_nan=False)}}}' if params else "}")
    return head.encode() + b",".join(rows) + tail.encode()
