"""Device-to-device links: the text of every command and file that makes one.

A link lets one device (the sender) run exactly one thing on another (the receiver) over
SSH, with no open port and no new protocol:

- the key is made on the sender (ed25519, no passphrase) in its deploy user's llama-docker
  state folder and never leaves it; the controller reads only its public half;
- the receiver authorizes it in the deploy user's `~/.ssh/authorized_keys` with OpenSSH's
  own restrictions: `restrict` (no shell, no pty, no forwarding of any kind) plus either a
  forced command (the relay: `forced_options`) or one `permitopen` forward whose session can
  only hold the connection (a split model: `forward_options`), and `from=` the sender's
  address when that is an IP;
- the receiver's host key is pinned on the sender from what the controller's own verified
  connection to the receiver saw: `StrictHostKeyChecking=yes`, no trust on first use.

The relay's forced command (`receive_script`) takes only `receive <sha256> <ext>`, and runs
only what the controller announced for that file (`expect_path`): the same locked,
verify-then-rename store command a push runs (llama_docker/device/store.py). Between copies
the key can deliver nothing.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from llama_docker.device import ciphers
from llama_docker.device.store import Store, under_lock, writer_command
from llama_docker.knobs.errors import LlamaDockerError

EXTS = ("gguf", "tar")  # what a peer may send: a model, the server image's archive
REFUSED = 65  # the forced command's exit status for a request it does not take
UNEXPECTED = 66  # a well-formed request for a file the controller did not announce
NO_SOURCE = 67  # the sender has no verified file to send
SSH_FAILED = 255  # the OpenSSH client's own failure (connect, host key, auth)
MARK = "llama-docker-link"  # the comment that names a link's key, in authorized_keys
_PUBKEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def link_dir(profile: str, home: str) -> str:
    """The deploy user's llama-docker state folder for links on the device."""
    base = f"{home}/.llama-docker" if profile == "macos" else f"{home}/.local/share/llama-docker"
    return f"{base}/link"


def key_path(folder: str) -> str:
    return f"{folder}/id_ed25519"


def receive_path(folder: str) -> str:
    """The receiver's forced command."""
    return f"{folder}/receive"


def expect_path(folder: str, sha: str, ext: str) -> str:
    """What the controller announced for one file: the exact store command to run."""
    return f"{folder}/expect/{sha}.{ext}"


def known_hosts_path(folder: str, receiver: str) -> str:
    """The sender's pinned host key of one receiver (one file each: no editing, no TOFU)."""
    return f"{folder}/hosts/{receiver}"


def keygen_command(folder: str, comment: str) -> str:
    """Make the sender's key once (kept; never copied off the device); print its public half."""
    key = shlex.quote(key_path(folder))
    return (f"umask 077 && mkdir -p {shlex.quote(folder)} && "
            f"{{ [ -f {key} ] || ssh-keygen -q -t ed25519 -N '' -C {shlex.quote(comment)} "
            f"-f {key} >/dev/null; }} && cat {key}.pub")


def public_key(text: str, host: str) -> str:
    """`<type> <base64>` of an OpenSSH public key line, or a one-line refusal naming host."""
    words = text.strip().split()
    key = " ".join(words[:2])
    if len(words) < 2 or not _PUBKEY.match(key):
        raise LlamaDockerError(f"{host}: the link key's public half is not an OpenSSH key: "
                               f"{text.strip()[:80]!r}")
    return key


def _from(address: str | None) -> str:
    """`from="ip"`: only an IP literal (sshd matches names only with UseDNS, off by default)."""
    if not address:
        return ""
    try:
        return f',from="{ipaddress.ip_address(address)}"'
    except ValueError:
        return ""


def _no_quote(what: str, text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise LlamaDockerError(f"{what} {text!r} cannot be written into authorized_keys "
                               "(a quote, backslash or newline)")
    return text


def forced_options(command: str, sender_address: str | None = None) -> str:
    """A key that can run `command` only (whatever the client asks; sshd puts the request in
    SSH_ORIGINAL_COMMAND): no shell, pty, agent, X11 or port forwarding."""
    return f'restrict,command="{_no_quote("command", command)}"{_from(sender_address)}'


# The forward's forced command. A session, not `ssh -N`, because sshd sets TCP_NODELAY on
# a connection only once a session runs a command: without it the worker's answers wait on
# Nagle's algorithm for the head's delayed ACK, about 40 ms per token. It holds the session
# while the connection lasts ($PPID is sshd's process of this connection; it does not
# outlive it) and answers any other request, `id` or a shell, with exit 1 at once.
HOLD = "hold"
HOLD_COMMAND = ("exec sh -c 'case $SSH_ORIGINAL_COMMAND in " + HOLD + ") while kill -0 $PPID "
                "2>/dev/null; do sleep 5; done;; *) exit 1;; esac'")


def forward_options(port: int, sender_address: str | None = None) -> str:
    """A key that can open one local forward to 127.0.0.1:port and nothing else: no shell,
    and a forced command that only holds the session (`HOLD_COMMAND`); no listening port:
    `port-forwarding` also re-allows remote forwards, and sshd takes no
    `permitlisten="none"`, so the only one allowed is loopback port 1, which sshd refuses an
    unprivileged login. For a split model's RPC worker."""
    return (f'restrict,port-forwarding,permitopen="127.0.0.1:{int(port)}",'
            f'permitlisten="127.0.0.1:1",command="{HOLD_COMMAND}"{_from(sender_address)}')


def authorized_line(options: str, pubkey: str, sender: str) -> str:
    """The receiver's authorized_keys line for one sender's link key."""
    _name(sender)
    return f"{options} {pubkey} {MARK}:{sender}"


def _name(sender: str) -> str:
    if not _NAME.match(sender):
        raise LlamaDockerError(f"{sender!r} cannot name a link (letters, digits, '.', '_', "
                               "'-', ':' only)")
    return sender


def authorize_command(line: str, sender: str) -> str:
    """Put `line` in ~/.ssh/authorized_keys in place of any earlier line for the same
    sender's link, leaving every other line alone; prints `same` or `added`.

    A new file is renamed over the old one (a cut never leaves a half-written file that
    would lock the deploy user out). The user's own keys stay as they were."""
    q = shlex.quote(line)
    return ("umask 077 && mkdir -p ~/.ssh && f=~/.ssh/authorized_keys && touch \"$f\" && "
            f"if grep -qxF {q} \"$f\"; then echo same; else "
            f"{_without(sender)} > \"$f.llama-docker\" && "
            f"printf '%s\\n' {q} >> \"$f.llama-docker\" && "
            "mv -f \"$f.llama-docker\" \"$f\" && echo added; fi")


def _without(sender: str) -> str:
    """authorized_keys without the sender's link line (its last word names it exactly)."""
    return f"awk -v m={shlex.quote(f'{MARK}:{_name(sender)}')} '$NF != m' \"$f\""


def unauthorize_command(sender: str) -> str:
    """Remove a sender's link key from the receiver (a link no longer wanted)."""
    return ("f=~/.ssh/authorized_keys; [ -f \"$f\" ] || exit 0; "
            f"{_without(sender)} > \"$f.llama-docker\" && "
            "mv -f \"$f.llama-docker\" \"$f\"")


def known_hosts_line(address: str, port: int, keytype: str, b64: str) -> str:
    """A known_hosts entry for what the sender dials (`[addr]:port` unless port 22)."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", address):
        raise LlamaDockerError(f"{address!r} is no address a device can pin a host key for")
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {keytype} {b64}"


def write_file_command(path: str, text: str, mode: str = "600") -> str:
    """Write `text` to `path` whole (a temporary file renamed over it); prints `same` when
    it already says exactly that."""
    q, tmp = shlex.quote(path), shlex.quote(path + ".tmp")
    body = shlex.quote(text)
    return (f"umask 077 && mkdir -p \"$(dirname {q})\" && "
            f"if [ -f {q} ] && [ \"$(cat {q})\" = {shlex.quote(text.rstrip(chr(10)))} ]; then "
            f"echo same; else printf '%s' {body} > {tmp} && chmod {mode} {tmp} && "
            f"mv -f {tmp} {q} && echo written; fi")


def expect_text(store: Store, sha: str, offset: int, size: int) -> str:
    """The store command the receiver runs for one announced copy: the push's own (write the
    .part from `offset`, hash, rename, mark), under the file's lock."""
    return under_lock(store.lock(sha), writer_command(store, sha, offset, size)) + "\n"


def receive_script(folder: str, stores: dict[str, Store]) -> str:
    """The receiver's forced command: `receive <sha256> <ext>` and nothing else.

    It checks the request's shape itself (sshd hands the client's words over verbatim) and
    then runs the file the controller wrote for exactly that sha and ext, if there is one:
    REFUSED for anything else, UNEXPECTED for a file nobody announced. `stores` names the
    store of each ext; only those exts are taken.
    """
    exts = "|".join(e for e in EXTS if e in stores)
    expect = shlex.quote(f"{folder}/expect")
    return (
        "#!/bin/sh\n"
        "# llama-docker: the only command a peer's link key runs here (its forced command).\n"
        "set -f\n"
        f'no() {{ echo "refused: $1 (this key runs only: receive <sha256> <{exts}>)" >&2; '
        f"exit {REFUSED}; }}\n"
        'case $SSH_ORIGINAL_COMMAND in *[!a-z0-9\\ ]*) no "a character outside [a-z0-9 ]";; '
        "esac\n"
        "set -- $SSH_ORIGINAL_COMMAND\n"
        '[ "$#" -eq 3 ] && [ "$1" = receive ] || no "not a receive request"\n'
        'case $2 in *[!0-9a-f]*) no "not a sha256";; esac\n'
        '[ "${#2}" -eq 64 ] || no "not a sha256"\n'
        f'case $3 in {exts}) ;; *) no "no such kind of file";; esac\n'
        f'f={expect}/"$2.$3"\n'
        f'[ -f "$f" ] || {{ echo "unexpected: nothing announced $2.$3 here" >&2; '
        f"exit {UNEXPECTED}; }}\n"
        'exec sh "$f"\n'
    )


def send_command(source: str, offset: int, sha: str, ext: str, key: str, known_hosts: str,
                 user: str, address: str, port: int, aes: bool) -> str:
    """On the sender: its verified file from byte `offset` into the receiver's forced
    command, with the push's cipher order (`aes`: both ends have AES instructions). The
    exit status is the receiver's store command's, or ssh's own 255."""
    q = shlex.quote
    ssh = ["ssh", "-i", key, "-c", ciphers.order(aes), "-o", "IdentitiesOnly=yes",
           "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
           "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
           "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
           "-o", "LogLevel=ERROR", "-p", str(port), "-l", user, address,
           f"receive {sha} {ext}"]
    return (f"[ -r {q(source)} ] || {{ echo 'no verified {ext} to send' >&2; "
            f"exit {NO_SOURCE}; }}; tail -c +{offset + 1} {q(source)} | "
            + " ".join(q(a) for a in ssh))
