"""Aliyun RPC v1 (HMAC-SHA1) signing, shared by the client and the emulator.

The canonical string is built here with RFC 3986 encoding (``quote(safe='~')``, as the tea SDK
does; the old SDK's ``pathname2url`` is platform dependent); the HMAC itself is
aliyun-python-sdk-core's signer.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from aliyunsdkcore.auth.algorithm import sha_hmac1


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding: space is %20, ``*`` is %2A, ``~`` stays."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    """Sorted ``k=v`` pairs joined with ``&``, each side percent-encoded (Signature excluded)."""
    return "&".join(
        f"{percent_encode(k)}={percent_encode(v)}"
        for k, v in sorted(params.items())
        if k != "Signature"
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&`` + the canonical query, percent-encoded a second time."""
    return _string_to_sign(method, canonical_query(params))


def signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Base64(HMAC-SHA1(secret + "&", StringToSign)), via aliyun-python-sdk-core."""
    return _sign(string_to_sign(method, params), secret)


def signed_query(method: str, params: Mapping[str, str], secret: str) -> str:
    """The query as sent, ``Signature`` last: ``wire_query`` of the params plus their signature.

    The canonical query (sorted, each key and value encoded once) is both what is signed and
    what is sent. (Encoding the pairs twice was a tenth of the gateway's CPU: see README.)
    """
    canonical = canonical_query(params)
    digest = _sign(_string_to_sign(method, canonical), secret)
    return f"{canonical}&Signature={percent_encode(digest)}"


def _string_to_sign(method: str, canonical: str) -> str:
    return f"{method.upper()}&%2F&{percent_encode(canonical)}"


def _sign(string: str, secret: str) -> str:
    result: str = sha_hmac1.get_sign_string(string, secret + "&")
    return result


def wire_query(params: Mapping[str, str]) -> str:
    """The query string as sent: every value percent-encoded (space as %20)."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())
