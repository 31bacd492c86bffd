"""Credentials for the coordinator <-> aggregation-server channel (mutual TLS 1.3).

``python -m pgkernels.serving.credentials --out DIR --world-size K`` makes a
fresh CA for one deployment, issues one certificate per server rank and one
for the coordinator, and then throws the CA's private key away (nobody can
issue another credential for this deployment afterwards)::

    DIR/ca.pem                       the CA certificate
    DIR/coordinator/{ca,cert,key}.pem
    DIR/server<R>/{ca,cert,key}.pem  and x25519.key: server R's sealing key
    DIR/server-keys.txt              the servers' X25519 public keys, hex, comma-separated,
                                     rank order: PGKERNELS_SERVER_KEYS for clients

Copy ``DIR/server<R>`` to server R's host only and ``DIR/coordinator`` to the
coordinator's; give ``server-keys.txt`` to the clients (they pin those keys).
Private keys are written 0600 in 0700 folders.

What a certificate binds: server R's certificate names ``pgkernels-server-R``
(subject CN and its only DNS SAN) and may only authenticate a TLS *client*
(extended key usage clientAuth); the coordinator's names
``pgkernels-coordinator`` and may only authenticate a TLS *server*
(serverAuth). The coordinator takes a server's rank from its verified
certificate, never from a message, so a server holding only its own key
cannot connect as another rank; a server cannot pose as the coordinator
either. Hostnames are not part of the identity (servers verify the fixed
name ``pgkernels-coordinator``): the deployment's private CA is.
"""

import argparse
import datetime
import os
import pathlib
import re
import ssl
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

COORDINATOR_NAME = "pgkernels-coordinator"
_SERVER_RX = re.compile(r"pgkernels-server-(\d{1,4})")


def server_name(rank):
    return f"pgkernels-server-{int(rank)}"


def _write(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(ca_key, ca_name, name, usage, days, now):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def make_credentials(out, world_size, days=365, x25519_keys=True):
    """Write a deployment's credentials under ``out`` (see the module docstring).

    Returns the servers' X25519 public keys (rank order) when ``x25519_keys``,
    else ``None`` (local servers make a fresh sealing key per session).
    """
    if not isinstance(world_size, int) or not 2 <= world_size <= 1024:
        raise ValueError(f"world_size must be an int in [2, 1024], got {world_size!r}")
    out = pathlib.Path(out)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgkernels deployment CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    _write(out / "ca.pem", ca_pem, 0o644)
    roles = [("coordinator", COORDINATOR_NAME, ExtendedKeyUsageOID.SERVER_AUTH)]
    roles += [(f"server{r}", server_name(r), ExtendedKeyUsageOID.CLIENT_AUTH) for r in range(world_size)]
    pubs = []
    for folder, name, usage in roles:
        d = out / folder
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        key, cert = _issue(ca_key, ca_name, name, usage, days, now)
        _write(d / "ca.pem", ca_pem, 0o644)
        _write(d / "cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(d / "key.pem", _pem_key(key), 0o600)
        if folder.startswith("server") and x25519_keys:
            sk = X25519PrivateKey.generate()
            _write(d / "x25519.key", _pem_key(sk), 0o600)
            pubs.append(sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    del ca_key  # never written: no further credentials can be issued for this deployment
    if pubs:
        _write(out / "server-keys.txt", (",".join(p.hex() for p in pubs) + "\n").encode(), 0o644)
        return pubs
    return None


def load_x25519(path):
    """(private key, raw public key) from an ``x25519.key`` file."""
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError(f"{path} does not hold an X25519 private key")
    return key, key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_server_keys(text):
    """``PGKERNELS_SERVER_KEYS`` / ``server-keys.txt`` (hex keys, comma-separated) -> list of bytes."""
    keys = [bytes.fromhex(k.strip()) for k in text.replace("\n", ",").split(",") if k.strip()]
    if any(len(k) != 32 for k in keys):
        raise ValueError("server keys must be 32-byte X25519 keys in hex")
    return keys


def _files(folder):
    folder = pathlib.Path(folder)
    paths = [folder / n for n in ("ca.pem", "cert.pem", "key.pem")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing credential files: {missing} (make them with "
                                "python -m pgkernels.serving.credentials --out DIR --world-size K)")
    return [str(p) for p in paths]


def _context(purpose, folder):
    ca, cert, key = _files(folder)
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)  # only this deployment's CA, no system roots
    return ctx


def coordinator_context(folder):
    """TLS context of the coordinator: a TLS server that requires a client certificate."""
    ctx = _context(ssl.PROTOCOL_TLS_SERVER, folder)
    ctx.num_tickets = 0  # no session resumption; also keeps post-handshake bytes off the wire
    return ctx


def server_context(folder):
    """TLS context of an aggregation server: a TLS client that verifies ``pgkernels-coordinator``."""
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT, folder)
    ctx.check_hostname = True
    return ctx


def rank_of(peercert):
    """The server rank a verified peer certificate (``SSLSocket.getpeercert()``) names, or None."""
    if not peercert:
        return None
    sans = [v for k, v in peercert.get("subjectAltName", ()) if k == "DNS"]
    cns = [v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"]
    if len(sans) != 1 or cns != sans:
        return None
    m = _SERVER_RX.fullmatch(sans[0])
    return int(m.group(1)) if m else None


def own_rank(folder):
    """The rank named by the certificate in ``folder`` (a server checks it is its MPC rank)."""
    cert = x509.load_pem_x509_certificate(pathlib.Path(_files(folder)[1]).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    m = _SERVER_RX.fullmatch(names[0]) if len(names) == 1 else None
    if m is None:
        raise ValueError(f"{folder}/cert.pem is not an aggregation-server certificate")
    return int(m.group(1))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pgkernels.serving.credentials",
                                 description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to create (private keys 0600, folders 0700)")
    ap.add_argument("--world-size", type=int, required=True, help="number of aggregation servers")
    ap.add_argument("--days", type=int, default=365, help="certificate validity (default 365)")
    a = ap.parse_args(argv)
    if a.world_size < 2:
        ap.error("--world-size must be >= 2")
    out = pathlib.Path(a.out)
    if out.exists() and any(out.iterdir()):
        ap.error(f"{out} exists and is not empty: refusing to overwrite credentials")
    pubs = make_credentials(out, a.world_size, a.days)
    print(f"wrote {out}/{{ca.pem,coordinator/,server0..server{a.world_size - 1}/,server-keys.txt}}")
    print("PGKERNELS_SERVER_KEYS=" + ",".join(p.hex() for p in pubs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
