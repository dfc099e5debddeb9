"""Option negotiation (RFC 2347/2348/2349/7440)."""

from __future__ import annotations

from provisiond.tftp.options import negotiate, retries_within, window_cap


def test_no_options_no_oack() -> None:
    neg = negotiate({}, 1000)
    assert (neg.blksize, neg.windowsize, neg.timeout, neg.reply) == (512, 1, 1.0, {})


def test_all_understood_options_are_acknowledged() -> None:
    neg = negotiate({"blksize": "1468", "tsize": "0", "timeout": "3", "windowsize": "16",
                     "multicast": ""}, 123456)
    assert neg.reply == {"blksize": "1468", "timeout": "3", "tsize": "123456",
                         "windowsize": "16"}
    assert (neg.blksize, neg.timeout, neg.windowsize) == (1468, 3.0, 16)


def test_out_of_range_values_are_ignored_or_lowered() -> None:
    assert negotiate({"blksize": "7"}, 1).reply == {}
    assert negotiate({"blksize": "x"}, 1).reply == {}
    assert negotiate({"blksize": "70000"}, 1).reply == {"blksize": "65464"}
    assert negotiate({"blksize": "70000"}, 1, max_blksize=1468).blksize == 1468
    assert negotiate({"timeout": "0"}, 1).reply == {}
    assert negotiate({"timeout": "256"}, 1).reply == {}
    assert negotiate({"windowsize": "0"}, 1).reply == {}
    assert negotiate({"tsize": "-1"}, 1).reply == {}


def test_window_is_capped_to_what_a_client_buffer_absorbs() -> None:
    # Measured with atftp on loopback (default 208 KiB receive buffer): windows beyond
    # about 96 x 1468, 16 x 8192 or 4 x 65464 bytes overflow it and the transfer stalls.
    assert window_cap(512) == 124
    assert window_cap(1468) == 69
    assert window_cap(8192) == 9
    assert window_cap(65464) == 2
    neg = negotiate({"blksize": "65464", "windowsize": "16"}, 1)
    assert neg.windowsize == 2 and neg.reply["windowsize"] == "2"
    assert negotiate({"windowsize": "8"}, 1).windowsize == 8
    assert window_cap(65464, client_rcvbuf=4 * 2**20) == 45
    assert window_cap(8, client_rcvbuf=1) == 1


def test_timeout_option_is_capped_and_retries_fit_the_silence_budget() -> None:
    assert negotiate({"timeout": "255"}, 1, max_timeout=15).reply == {}
    assert negotiate({"timeout": "15"}, 1, max_timeout=15).reply == {"timeout": "15"}
    # (retries + 1) waits of `timeout` fit in max_silence, whatever was asked
    for timeout in (1.0, 2.0, 5.0, 10.0, 15.0):
        retries = retries_within(timeout, 5, 30.0)
        assert (retries + 1) * timeout <= 30.0 and retries <= 5
    assert retries_within(1.0, 5, 30.0) == 5
