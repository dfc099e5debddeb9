"""IPMI numbers from the IPMI v2.0 rev 1.1 specification, shared by the power driver
(provisiond.power.ipmi, rmcp) and the virtual BMC (provisiond.lab), so both speak one table."""

from __future__ import annotations

# Network functions and commands (table G-1).
NETFN_CHASSIS = 0x00
NETFN_APP = 0x06
CMD_CHASSIS_STATUS = 0x01
CMD_CHASSIS_CONTROL = 0x02
CMD_SET_BOOT_OPTIONS = 0x08
CMD_GET_BOOT_OPTIONS = 0x09
CMD_GET_CHANNEL_AUTH_CAP = 0x38

# Chassis control directives (table 28-4), by the driver's action names.
CONTROL = {"off": 0, "on": 1, "cycle": 2, "reset": 3, "soft": 5}

# Boot device selector values, bits 5:2 of boot flags data 2 (table 28-14), by pyghmi's names.
BOOT_DEVICES = {
    "default": 0x0,
    "network": 0x1,
    "hd": 0x2,
    "safe": 0x3,
    "optical": 0x5,
    "setup": 0x6,
    "floppy": 0xF,
}

# Completion codes (table 5-2).
CC_NODE_BUSY = 0xC0
CC_TIMEOUT = 0xC3
CC_INVALID_DATA = 0xCC
CC_PARAM_NOT_SUPPORTED = 0x80
CC_NOT_IN_PRESENT_STATE = 0xD5

# IPMB addresses of an IPMI LAN request (section 13.8).
BMC_ADDRESS = 0x20
REMOTE_SWID = 0x81
