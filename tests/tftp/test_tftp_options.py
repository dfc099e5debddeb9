"""Option negotiation (RFC 2347/2348/2349/7440)."""

from __future__ import annotations

from provisiond.tftp.options import DEFAULT_WINDOW_BYTES, negotiate, window_cap


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
    neg = negotiate({"blksize": "65464", "windowsize": "16"}, 1)
    assert neg.windowsize == window_cap(65464) < 16
    assert neg.windowsize * 65464 <= max(65464, DEFAULT_WINDOW_BYTES)
    assert negotiate({"windowsize": "65535"}, 1).windowsize == DEFAULT_WINDOW_BYTES // 512
    assert window_cap(65464, window_bytes=1) == 1
