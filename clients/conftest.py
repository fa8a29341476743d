"""The fixtures of the seat clients' tests; the machinery is in harness.py."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import BOUND_S, kill_all, not_run  # noqa: E402


@pytest.fixture(autouse=True)
def _cleanup_processes():
    yield
    kill_all()


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="sessiond-clients-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def test_ca():
    """A private CA and a certificate it signed for 127.0.0.1 and localhost (openssl)."""
    if shutil.which("openssl") is None:
        not_run("seat clients over HTTPS", "no openssl on this machine")
    path = tempfile.mkdtemp(prefix="sessiond-clients-ca-")
    ca, ca_key = os.path.join(path, "ca.pem"), os.path.join(path, "ca.key")
    cert, key = os.path.join(path, "server.pem"), os.path.join(path, "server.key")
    csr, ext = os.path.join(path, "server.csr"), os.path.join(path, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for argv in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=sessiond clients test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
         "-set_serial", "1", "-days", "2", "-out", cert, "-extfile", ext],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=BOUND_S)
    yield {"ca": ca, "cert": cert, "key": key}
    shutil.rmtree(path, ignore_errors=True)


