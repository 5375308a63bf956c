"""https to a server whose certificate is signed by a private CA (a real TLS loopback stub):
refused without the CA, scored with --ca-bundle (embedded PEM), --ca-bundle-path (a file the
UDF VM reads, e.g. in BucketFS) or --tls-verify false."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from typing import Any

import pytest

from tests.test_udf_helpers import (
    Answer,
    Stub,
    connection,
    fake_model_dir,
    json_answer,
    make_sql,
    model_vm,
)

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def certificate(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([ip]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pki")
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = certificate("EMS test CA", ca_key, None, None, ca=True)
    server = certificate("127.0.0.1", server_key, ca.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (root / "ca.pem").write_bytes(ca.public_bytes(pem))
    (root / "server.pem").write_bytes(server.public_bytes(pem))
    (root / "server.key").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(root / "server.pem", root / "server.key")
    return {"ca": str(root / "ca.pem"), "context": context}


def model(n: int, body: bytes, headers: dict[str, str]) -> Answer:
    rows = json.loads(body)["dataframe_split"]["data"]
    return json_answer(200, {"predictions": [{"label": "OK", "score": 1.0} for _ in rows]})


ROWS = [(1, "a"), (2, "b")]


@pytest.mark.parametrize("tls", ["ca_bundle", "ca_bundle_path", "tls_verify"])
def test_private_ca(tmp_path, pki, tls: str) -> None:
    task = fake_model_dir(tmp_path, "text-classification")
    options = {"retries": 2, "backoff": 0.01, "connect_timeout": 2.0, "timeout": 5.0}
    with Stub(decide=model, ssl_context=pki["context"]) as stub:
        assert stub.url.startswith("https://")
        refused = model_vm(make_sql(task, **options), connections=connection(stub.url))
        out = refused.run_groups([ROWS])
        assert all(r[-1].startswith("TLS error with https://127.0.0.1") for r in out)
        assert all("--ca-bundle" in r[-1] and "attempt" not in r[-1] for r in out)  # no retries
        value = {"ca_bundle": pki["ca"], "ca_bundle_path": pki["ca"], "tls_verify": False}[tls]
        vm = model_vm(make_sql(task, **options, **{tls: value}), connections=connection(stub.url))
        assert vm.run_groups([ROWS]) == [(1, "a", "OK", 1.0, 1, None), (2, "b", "OK", 1.0, 1, None)]
        assert stub.posts == 1
