"""Free memory the way a process on the device can use it: the command and its parse.

`/proc/meminfo`'s MemAvailable is the kernel's estimate for the whole machine; a container
or VM limit (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`) on any level above the
login shell caps it further, and /proc/meminfo does not show it (a container sees the
machine's RAM). Both are read; the smaller wins. What llama-docker's own server and RPC
worker hold already (their anonymous memory) counts as free: a re-run fits the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

# cgroup v1 says "no limit" with a number near 2**63 rounded to a page.
UNLIMITED = 1 << 60
OWN = ("llama-server", "ggml-rpc-server")  # /proc/PID/comm of what llama-docker runs

COMMAND = r"""awk '/^MemAvailable:/ {printf "avail %.0f\n", $2 * 1024}' /proc/meminfo
for d in /proc/[0-9]*; do
  c=$(cat "$d/comm" 2>/dev/null) || continue
  case $c in llama-server|ggml-rpc-server)
    awk '/^RssAnon:/ {printf "own %.0f\n", $2 * 1024}' "$d/status" 2>/dev/null;; esac
done
level() {  # limit usage inactive of one cgroup folder, if it has a limit
  [ -r "$1/$2" ] || return 0
  lim=$(cat "$1/$2"); [ "$lim" = max ] && return 0
  use=$(cat "$1/$3" 2>/dev/null || echo 0)
  ina=$(awk -v k="$4" '$1 == k {print $2}' "$1/memory.stat" 2>/dev/null)
  echo "cg $lim $use ${ina:-0} $1"
}
while IFS=: read -r _ ctrl path; do
  case ",$ctrl," in
    ,,) root=/sys/fs/cgroup; files="memory.max memory.current inactive_file";;
    *,memory,*) root=/sys/fs/cgroup/memory
      files="memory.limit_in_bytes memory.usage_in_bytes total_inactive_file";;
    *) continue;;
  esac
  [ -d "$root" ] || continue
  p=$path
  while :; do
    level "$root${p%/}" $files
    [ -z "$p" ] || [ "$p" = / ] && break
    p=${p%/*}
  done
done < /proc/self/cgroup
true"""


@dataclass(frozen=True)
class Free:
    """Bytes a model can take on one device, and what bounds it."""

    bytes: int
    bound: str  # "MemAvailable" or "cgroup limit" (the smaller of the two)


def parse(lines: list[str]) -> Free | None:
    """The COMMAND's output; None when the device did not say (not Linux)."""
    avail: int | None = None
    own = 0
    cgroup: int | None = None
    for line in lines:
        words = line.split()
        try:
            if words[:1] == ["avail"]:
                avail = int(words[1])
            elif words[:1] == ["own"]:
                own += int(words[1])
            elif words[:1] == ["cg"]:
                limit, usage, inactive = (int(w) for w in words[1:4])
                if limit < UNLIMITED:
                    room = max(limit - usage + inactive, 0)
                    cgroup = room if cgroup is None else min(cgroup, room)
        except (IndexError, ValueError):
            continue
    if avail is None:
        return None
    if cgroup is not None and cgroup < avail:
        return Free(cgroup + own, "cgroup limit")
    return Free(avail + own, "MemAvailable")
