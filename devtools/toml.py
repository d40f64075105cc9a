"""campus-mfa.toml files written by the tests, the benchmark and the demo: from a dict, or
as a copy of a file with some keys set."""
from __future__ import annotations

import json
import re
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def dump_toml(data: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{section}]\n" + "".join(f"{key} = {toml_value(value)}\n"
                                                for key, value in table.items()) + "\n"
                   for section, table in data.items())


def toml_with(text: str, changes: dict[str, dict[str, str]]) -> str:
    """A config file's text with some keys set (values as TOML literals), each at the top
    of its section (a line that set it before is dropped; a missing section is added)."""
    pending = {section: dict(keys) for section, keys in changes.items()}
    out: list[str] = []
    section = None
    for line in text.splitlines():
        header = re.fullmatch(r"\[(\w+)\]", line.strip())
        if header:
            section = header.group(1)
            out.append(line)
            out += [f"{key} = {value}" for key, value in pending.pop(section, {}).items()]
            continue
        key = line.split("=", 1)[0].strip()
        if "=" in line and key in changes.get(section or "", {}):
            continue  # set at the section's top
        out.append(line)
    for section, keys in pending.items():
        out += [f"[{section}]"] + [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(out) + "\n"
