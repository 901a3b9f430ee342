"""What the Python side shares with ``callsetup.c``, read from the one header both use, ``callsetup.h``.

The header's ``#define GN_*`` integers become the names below (a stage's text comes from its comment),
and its structs become ctypes structures (``STRUCTS``) and, for the result a call process reads in one
unpack, a ``struct.Struct`` (``RESULT``). Nothing here is repeated by hand: a field added to the header
reaches both sides, and ``callsetup.check_build`` compares the sizes the compiler saw with these.

>>> MAX_FDS, SERVE_CHILD, STAGES[GN["GN_STAGE_CHROOT"]]
(8, 2, 'chroot')
"""

from __future__ import annotations

import ctypes
import os
import re
import struct

HEADER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callsetup.h")

# C type (``const`` dropped) -> ctypes type and ``struct`` format code (native layout)
_SCALARS = {
    "int": (ctypes.c_int, "i"),
    "unsigned long": (ctypes.c_ulong, "L"),
    "size_t": (ctypes.c_size_t, "N"),
    "ssize_t": (ctypes.c_ssize_t, "n"),
    "char *": (ctypes.c_char_p, "P"),
    "void *": (ctypes.c_void_p, "P"),
}
_DEFINE = re.compile(r"^#define\s+(GN_\w+)\s+(-?\d+)\s*(?:/\*\s*(.*?)\s*\*/)?\s*$", re.M)
_STRUCT = re.compile(r"^struct\s+(gn_\w+)\s*\{(.*?)^\};", re.M | re.S)
_FIELD = re.compile(r"^(?P<type>[\w\s]+?\s*\**)\s*(?P<name>\w+)(?:\[(?P<count>\w+)\])?$")


def _parse(text: str) -> tuple[dict[str, int], dict[str, str], dict[str, list[tuple[str, str, str | None]]]]:
    """``(values, comments, structs)``: each ``GN_*`` define's value and comment, each struct's fields as
    ``(C type, name, array length or None)``."""
    values, comments = {}, {}
    for name, value, comment in _DEFINE.findall(text):
        values[name], comments[name] = int(value), comment
    structs = {}
    for name, body in _STRUCT.findall(text):
        fields = []
        for line in re.sub(r"/\*.*?\*/", "", body, flags=re.S).split(";"):
            decl = " ".join(line.replace("const ", " ").split()).replace(" *", " *")
            if not decl:
                continue
            match = _FIELD.match(decl)
            if match is None:
                raise ValueError(f"{HEADER_FILE}: struct {name}: cannot read field {decl!r}")
            ctype = " ".join(match["type"].replace("*", " *").split()).replace(" *", " *").replace("* ", "*")
            fields.append((ctype.strip(), match["name"], match["count"]))
        structs[name] = fields
    return values, comments, structs


def _build(structs: dict, values: dict) -> dict[str, type[ctypes.Structure]]:
    """ctypes structures for the header's structs, in the header's order (a struct names earlier ones)."""
    built: dict[str, type[ctypes.Structure]] = {}
    for name, fields in structs.items():
        members = []
        for ctype, field, count in fields:
            if ctype in _SCALARS:
                kind = _SCALARS[ctype][0]
            elif ctype.startswith("struct ") and ctype.rstrip(" *")[7:] in built:
                kind = built[ctype.rstrip(" *")[7:]]
                kind = ctypes.POINTER(kind) if ctype.endswith("*") else kind
            else:
                raise ValueError(f"{HEADER_FILE}: struct {name}.{field}: type {ctype!r} is not in abi.py's table")
            if count is not None:
                kind = kind * (values[count] if count in values else int(count))
            members.append((field, kind))
        built[name] = type(name, (ctypes.Structure,), {"_fields_": tuple(members)})
    return built


def _format(fields: list[tuple[str, str, str | None]]) -> struct.Struct:
    """The native ``struct`` layout of a struct of scalars (for reading it in one unpack)."""
    return struct.Struct("@" + "".join(_SCALARS[ctype][1] for ctype, _, _ in fields))


def parse_header() -> tuple[dict[str, int], dict[str, str], dict[str, list[tuple[str, str, str | None]]]]:
    with open(HEADER_FILE, encoding="utf-8") as fh:
        return _parse(fh.read())


try:  # in a zygote: the daemon's parse, compiled beside this module (``daemon.compile_for_zygotes``), so that
    from ._header import PARSED  # the zygote's heap holds none of a parse's leftovers for calls to copy
except ImportError:
    PARSED = parse_header()
GN, _COMMENTS, _FIELDS = PARSED

PACKET = GN["GN_PACKET"]  # the largest packet on a zygote's sockets (requests, replies)
MAX_FDS = GN["GN_MAX_FDS"]
MAX_PLANS = GN["GN_MAX_PLANS"]
MAX_RLIMITS = GN["GN_MAX_RLIMITS"]
CTL_FD = GN["GN_CTL_FD"]
SERVE_PYTHON = GN["GN_SERVE_PYTHON"]
SERVE_CHILD = GN["GN_SERVE_CHILD"]
STAGES = {value: _COMMENTS[name] for name, value in GN.items() if name.startswith("GN_STAGE_")}
STRUCTS = _build(_FIELDS, GN)
RESULT = _format(_FIELDS["gn_result"])  # stage, error, msg_len, plan, source, source_len
