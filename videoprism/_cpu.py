"""What this CPU is, as /proc/cpuinfo tells (Linux; elsewhere nothing is known and callers take their defaults)."""

from __future__ import annotations

import functools

CPUINFO = "/proc/cpuinfo"


@functools.cache
def cpu_fields(path: str = CPUINFO) -> dict[str, str]:
    """The first processor's lines of /proc/cpuinfo ("vendor_id", "flags", ...); empty where it does not exist."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 names the line "flags", ARM "Features")."""
    fields = cpu_fields()
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


def cpu_vendor() -> str:
    """The x86 vendor id ("GenuineIntel", "AuthenticAMD"); empty where unknown."""
    return cpu_fields().get("vendor_id", "")
