"""The local control plane's PKI: a CA, the API server's serving certificate, client certificates for the
admin, controller-manager, scheduler and kwok, a front-proxy CA for the aggregation layer, the ServiceAccount
signing key, and self-contained kubeconfigs for each client. Generated once per workdir and reused.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_IP = "10.96.0.1"
FRONT_PROXY_CLIENT = "front-proxy-client"
CLUSTER_NAME = "hybridrec"


@dataclass(frozen=True)
class Pki:
    """Paths of the cluster's certificates and keys (PEM) under ``<workdir>/pki``."""

    dir: Path

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


# name -> (common name, organisations) of the client certificates; the apiserver maps them to RBAC users/groups.
CLIENT_CERTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("hybridrec-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("kwok-controller", ("system:masters",)),  # kwok acts for many nodes, so it cannot be one system:node
}


def ensure_pki(pki_dir: Path) -> Pki:
    """Create the CA, the apiserver serving cert, client certs and the ServiceAccount key pair unless present."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = Pki(pki_dir)
    names = ["ca", "apiserver", "front-proxy-ca", "front-proxy-client", *CLIENT_CERTS]
    if all(pki.crt(n).exists() and pki.key(n).exists() for n in names) and pki.sa_key.exists() and pki.sa_pub.exists():
        return pki
    pki_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def write_key(path: Path, key: Any) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    def subject(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                         + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def make_ca(cn: str) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = subject(cn)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def issue(name: str, cn: str, orgs: Sequence[str], ca: tuple[Any, x509.Certificate], *, server: bool) -> None:
        ca_key, ca_cert = ca
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(subject(cn, orgs)).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server:
            dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"]
            ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(SERVICE_IP)]
            builder = builder.add_extension(
                x509.SubjectAlternativeName([*map(x509.DNSName, dns), *map(x509.IPAddress, ips)]), critical=False)
        write_key(pki.key(name), key)
        pki.crt(name).write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    def write_ca(name: str, ca: tuple[Any, x509.Certificate]) -> None:
        write_key(pki.key(name), ca[0])
        pki.crt(name).write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))

    ca = make_ca("hybridrec-local-ca")
    issue("apiserver", "kube-apiserver", (), ca, server=True)
    for name, (cn, orgs) in CLIENT_CERTS.items():
        issue(name, cn, orgs, ca, server=False)
    # A separate CA for the aggregation layer's request-header authentication (kubeadm does the same): a client
    # certificate from the main CA must never be able to assert X-Remote-User.
    front_proxy_ca = make_ca("hybridrec-front-proxy-ca")
    write_ca("front-proxy-ca", front_proxy_ca)
    issue("front-proxy-client", FRONT_PROXY_CLIENT, (), front_proxy_ca, server=False)
    # RSA for ServiceAccount tokens (RS256), the algorithm every client library verifies.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    # The CA goes last: its presence marks a complete PKI for the reuse check above.
    write_ca("ca", ca)
    return pki


def render_kubeconfig(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str,
                      cluster: str = CLUSTER_NAME) -> str:
    """A self-contained kubeconfig (certificates embedded) for one client-certificate user."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)
