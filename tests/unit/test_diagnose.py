"""The one line a failed step's output comes down to."""

from llama_docker.device.diagnose import cause, explain, hint, plain

APT_EXPIRED = [
    "Step 3/9 : RUN apt-get update",
    "Get:1 http://deb.debian.org/debian forky InRelease [140 kB]",
    "E: Release file for http://deb.debian.org/debian/dists/forky/InRelease is expired "
    "(invalid since 25d 22h 3min). Updates for this repository will not be applied.",
    "The command '/bin/sh -c apt-get update' returned a non-zero code: 100",
]


def test_apt_error_line_wins_over_the_builder_summary() -> None:
    assert cause(APT_EXPIRED).startswith("E: Release file for")


def test_our_own_image_words_win_over_apt_and_the_builder() -> None:
    """The gateway image refuses an old HAProxy in a line of its own that names the fix;
    the builder's own summary after it must not hide it (seen with a bookworm base)."""
    lines = ["Setting up haproxy (2.6.12-1+deb12u4) ...",
             "E: an unrelated apt warning",
             "\x1b[91mllama-docker gateway: HAProxy 2.6.12-1+deb12u4 from debian:bookworm-slim "
             "is older than 3.1 (its checks need init-state): set image_base to Debian forky "
             "or newer",
             "\x1b[0mThe command '/bin/sh -c apt-get update && ...' returned a non-zero code: 1"]
    assert cause(lines).startswith("llama-docker gateway: HAProxy 2.6.12-1+deb12u4 from")


def test_expired_release_names_the_knob() -> None:
    assert "apt_check_valid_until = False" in hint(APT_EXPIRED)


def test_clock_behind_names_ntp() -> None:
    lines = ["E: Release file for http://x/InRelease is not valid yet (invalid for another "
             "2383d 4h). Updates for this repository will not be applied."]
    assert "timedatectl set-ntp true" in hint(lines)


def test_without_an_error_word_the_last_line_is_the_cause() -> None:
    assert cause(["building", "", "step 2 stopped"]) == "step 2 stopped"
    assert cause([]) == ""


def test_explain_is_one_line_without_colours_and_bounded() -> None:
    line = explain("Server image | Build", ["\x1b[31mError: " + "x" * 500 + "\x1b[0m"])
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("Server image | Build failed: Error: xxx")
    assert len(line) < 260
    assert plain(" a\n b ") == "a b"
