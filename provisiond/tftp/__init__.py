"""TFTP: pure packet/option/path code and the server around it."""

from provisiond.tftp.server import TftpServer, TransferStats

__all__ = ["TftpServer", "TransferStats"]
