"""Every typed app key, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.callbacks import CallbackSender
    from gateway.receipts import ReceiptDesk
    from gateway.service import Gateway

gateway_key: web.AppKey[Gateway] = web.AppKey("gateway")
callbacks_key: web.AppKey[CallbackSender] = web.AppKey("callbacks")
receipts_key: web.AppKey[ReceiptDesk] = web.AppKey("receipts")
