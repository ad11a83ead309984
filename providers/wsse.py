"""Huawei Cloud X-WSSE UsernameToken, shared by the client and the emulator."""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid

AUTHORIZATION = 'WSSE realm="SDP",profile="UsernameToken",type="Appkey"'


def password_digest(nonce: str, created: str, app_secret: str) -> str:
    """Base64 of the lowercase *hex* SHA-256 of nonce + created + secret (Huawei's quirk)."""
    hexdigest = hashlib.sha256((nonce + created + app_secret).encode()).hexdigest()
    return base64.b64encode(hexdigest.encode()).decode()


def x_wsse(app_key: str, app_secret: str, nonce: str | None = None,
           created: str | None = None) -> str:
    """The X-WSSE header value; nonce and created default to fresh ones."""
    nonce = nonce or uuid.uuid4().hex
    created = created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    digest = password_digest(nonce, created, app_secret)
    return (f'UsernameToken Username="{app_key}",PasswordDigest="{digest}",'
            f'Nonce="{nonce}",Created="{created}"')


_FIELD = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def quoted_fields(text: str) -> dict[str, str]:
    """``Name="value"`` pairs, as both WSSE headers (X-WSSE and Authorization) write them."""
    return dict(_FIELD.findall(text))


def parse_x_wsse(value: str) -> dict[str, str] | None:
    """The fields of an X-WSSE header, or None when it is not a UsernameToken."""
    value = value.strip()
    if not value.startswith("UsernameToken"):
        return None
    return quoted_fields(value[len("UsernameToken"):])
