"""Local emulators of the Aliyun, Huawei, Tencent and Twilio SMS APIs, on their real wire
protocols.

Used by the tests, by ``sms-gateway --emulate`` and by ``sms-emulator`` (SPEC section 6).
"""

from gateway.emulators.server import EmulatorServer, control_routes, start_emulators
from gateway.emulators.state import (
    EMULATOR_CREDENTIALS,
    EMULATOR_OPTIONS,
    MODES,
    RECEIPT_MODES,
    EmulatorState,
)

__all__ = [
    "EMULATOR_CREDENTIALS", "EMULATOR_OPTIONS", "MODES", "RECEIPT_MODES", "EmulatorServer",
    "EmulatorState",
    "control_routes", "start_emulators",
]
