"""Talking to the site's DNS server: read a zone (AXFR), send updates, both signed with TSIG.

Every failure becomes a DnsError naming the server, the zone and the server's reply (NOTAUTH,
REFUSED, a TSIG error such as BADKEY); none of them carries the key's secret (dnspython's Key
repr does, so a Key is never formatted into a message or a log line).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from provisiond.dns.records import ZoneContents
from provisiond.dns.settings import TsigKey

# Server replies to an update whose prerequisites failed: the zone changed since it was read.
PREREQUISITE_FAILED = ("YXDOMAIN", "YXRRSET", "NXDOMAIN", "NXRRSET")


class DnsError(Exception):
    """A DNS operation failed; `reply` is the server's answer (rcode or TSIG error) or the cause."""

    def __init__(self, what: str, reply: str, hint: str = "") -> None:
        super().__init__(f"{what}: {reply}" + (f" ({hint})" if hint else ""))
        self.reply = reply


def tsig_key(key: TsigKey) -> dns.tsig.Key:
    return dns.tsig.Key(key.name, base64.b64decode(key.secret), key.algorithm)


_PEER_ERRORS = {dns.tsig.PeerBadKey: "BADKEY", dns.tsig.PeerBadSignature: "BADSIG",
                dns.tsig.PeerBadTime: "BADTIME"}


def _tsig_hint(key_name: str, error: str) -> str:
    return {
        "BADKEY": f"the server does not know key {key_name!r}: check the key name in the key file",
        "BADSIG": f"the server rejected key {key_name!r}'s signature: the secret or algorithm differs",
        "BADTIME": "the clocks of this host and the DNS server differ by more than 5 minutes",
    }.get(error, "")


def _tsig_error(response: dns.message.Message) -> str | None:
    error = getattr(response, "tsig_error", 0)
    return dns.rcode.to_text(error) if error else None


class DnsClient:
    """One DNS server, one key; `timeout` bounds every query and update."""

    def __init__(self, server: str, port: int, key: TsigKey, timeout: float) -> None:
        self.server, self.port, self.timeout = server, port, timeout
        self.key_name = key.name
        self.signing_key = tsig_key(key)
        self._session = False  # inside connection(): queries and updates share one socket
        self._socket: socket.socket | None = None
        self._exchanges = 0  # on the current socket

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Queries and updates inside the block share one TCP connection (opened on first use),
        not one each: a sync of many changes pays one handshake, as a DNS server expects of a
        client with several messages (RFC 7766)."""
        self._session = True
        try:
            yield
        finally:
            self._session = False
            self._close()

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _exchange(self, message: dns.message.Message) -> dns.message.Message:
        """One message and its reply: over the session's connection, reopened once when the
        server closed it while it was idle (the message was then never read: resent as is)."""
        if not self._session:
            return dns.query.tcp(message, self.server, timeout=self.timeout, port=self.port)
        for attempt in range(2):
            if self._socket is None:
                self._socket = socket.create_connection((self.server, self.port), timeout=self.timeout)
                self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._exchanges = 0
            reused = self._exchanges > 0
            try:
                response = dns.query.tcp(message, self.server, timeout=self.timeout, port=self.port,
                                         sock=self._socket)
            except (ConnectionResetError, BrokenPipeError, EOFError):
                self._close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self._close()  # a timeout or a bad reply leaves the stream out of step
                raise
            self._exchanges += 1
            return response
        raise AssertionError("unreachable")  # the second attempt returns or raises

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"

    @contextmanager
    def _replies(self, what: str) -> Iterator[None]:
        """Turn dnspython's exceptions into a DnsError with the server's reply."""
        try:
            yield
        except dns.xfr.TransferError as exc:
            rcode = dns.rcode.to_text(exc.rcode)
            hint = (f"allow key {self.key_name!r} to transfer the zone (allow-transfer)"
                    if rcode in ("REFUSED", "NOTAUTH") else "")
            raise DnsError(what, rcode, hint) from None
        except dns.tsig.PeerError as exc:
            error = _PEER_ERRORS.get(type(exc), type(exc).__name__)
            raise DnsError(what, f"NOTAUTH ({error})", _tsig_hint(self.key_name, error)) from None
        except dns.message.UnknownTSIGKey:
            raise DnsError(what, "NOTAUTH (unsigned reply)", _tsig_hint(self.key_name, "BADKEY")) from None
        except dns.exception.Timeout:
            raise DnsError(what, f"no answer within {self.timeout:g} s", "is the server up and reachable?") from None
        except (OSError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise DnsError(what, f"cannot connect: {reason}", "is the server up and reachable?") from None
        except dns.exception.DNSException as exc:
            raise DnsError(what, f"bad reply: {type(exc).__name__}") from None

    def _call(self, what: str, message: dns.message.Message) -> dns.message.Message:
        with self._replies(what):
            response = self._exchange(message)
        rcode = response.rcode()
        tsig_error = _tsig_error(response)
        if tsig_error:
            raise DnsError(what, f"{dns.rcode.to_text(rcode)} ({tsig_error})", _tsig_hint(self.key_name, tsig_error))
        if rcode != dns.rcode.NOERROR:
            text = dns.rcode.to_text(rcode)
            hint = {
                "NOTAUTH": "the server is not authoritative for the zone, or refuses the key",
                "REFUSED": f"the server's policy refuses key {self.key_name!r} for this (update-policy/allow-*)",
                "NOTZONE": "the name is outside the zone",
            }.get(text, "the zone changed since it was read; run again" if text in PREREQUISITE_FAILED else "")
            raise DnsError(what, text, hint)
        return response

    def read_zone(self, zone: str) -> ZoneContents:
        """Every name of the zone with its records, by a signed AXFR."""
        query = dns.message.make_query(zone, dns.rdatatype.AXFR)
        query.use_tsig(self.signing_key)
        holder = dns.zone.Zone(zone)
        with self._replies(f"zone transfer of {zone} from {self.where}"):
            dns.query.inbound_xfr(self.server, holder, query=query, port=self.port,
                                  timeout=self.timeout, lifetime=self.timeout * 4)
        contents: ZoneContents = {}
        for name, node in holder.nodes.items():
            absolute = name.derelativize(holder.origin).to_text(omit_final_dot=True).lower()
            contents[absolute] = {
                dns.rdatatype.to_text(rdataset.rdtype): frozenset(_value(rdata) for rdata in rdataset)
                for rdataset in node.rdatasets
            }
        return contents

    def update(self, message: dns.update.UpdateMessage, what: str) -> None:
        self._call(what, message)

    def check(self, zone: str) -> None:
        """Reachable and the key accepted: a signed SOA query for the zone."""
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        query.use_tsig(self.signing_key)
        self._call(f"SOA query for {zone} at {self.where}", query)


def _value(rdata: object) -> str:
    """A record's value as records.py writes it (TXT without its quotes)."""
    if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
        return b"".join(rdata.strings).decode(errors="replace")
    return rdata.to_text().lower()  # type: ignore[attr-defined]
