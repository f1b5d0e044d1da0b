"""Makes a test identity provider for the delegation checks.

Usage: python delegation_setup.py DIR

Writes DIR/idp-private.pem (an ES256 key made here with `cryptography`), DIR/idp.json
(its issuer and kid) and DIR/mandate.toml, a Mandate configuration that trusts the IdP
for token-exchange subject tokens and for ID-JAGs, with the public key inline.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

IDP = "https://idp.conformance.test"
KID = "conformance-idp-1"


def b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (out / "idp-private.pem").write_bytes(pem)
    nums = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": KID, "alg": "ES256", "use": "sig",
                      "x": b64(nums.x), "y": b64(nums.y)}]}
    (out / "idp.json").write_text(json.dumps({"issuer": IDP, "kid": KID}))
    inline = json.dumps(jwks).replace("'", "")
    toml = ""
    for kind in ("subject-token", "id-jag"):
        toml += (
            "[[trusted_issuers]]\n"
            f'issuer = "{IDP}"\n'
            f'kind = "{kind}"\n'
            f"jwks = '{inline}'\n"
            'algorithms = ["ES256"]\n'
            'roles_claim = "groups"\n\n'
        )
    (out / "mandate.toml").write_text(toml)


if __name__ == "__main__":
    main()
