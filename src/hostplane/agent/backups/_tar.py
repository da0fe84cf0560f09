"""The tar format, as much of it as backups need: POSIX ustar headers with
PAX extended headers for what does not fit (long or non-ASCII names, large
sizes, sub-second mtimes).

Written by hand rather than with :mod:`tarfile` because an archive is made
of a few header blocks per file around bulk data, and building them
directly into the output buffer keeps per-file overhead to a few
microseconds. GNU tar and :mod:`tarfile` read what this writes, and the
reader accepts what they write (ustar, PAX, and GNU long names).
"""

from __future__ import annotations

from dataclasses import dataclass

from hostplane.agent.backups.store import ArchiveRejected

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)

REGTYPE = ord("0")
AREGTYPE = 0
LNKTYPE = ord("1")
SYMTYPE = ord("2")
CHRTYPE = ord("3")
BLKTYPE = ord("4")
DIRTYPE = ord("5")
FIFOTYPE = ord("6")
CONTTYPE = ord("7")
PAX_LOCAL = ord("x")
PAX_GLOBAL = ord("g")
GNU_LONGNAME = ord("L")
GNU_LONGLINK = ord("K")

_MAX_OCTAL_11 = 8**11 - 1
_MAX_OCTAL_7 = 8**7 - 1
_NS = 1_000_000_000
# Extended headers and GNU long names are held in memory; an archive that
# declares a larger one is hostile, not a backup.
MAX_META_BYTES = 1 << 20


def padding(size: int) -> int:
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    # The length prefix counts itself, so it is found by fixpoint.
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return b"%d" % length + body


def _format_mtime(mtime_ns: int) -> bytes:
    sign = b"-" if mtime_ns < 0 else b""
    seconds, fraction = divmod(abs(mtime_ns), _NS)
    text = b"%s%d.%09d" % (sign, seconds, fraction)
    return text.rstrip(b"0").rstrip(b".")


def _ustar(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: int,
    linkname: bytes,
) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = _octal(mode & 0o7777, 8)
    header[108:116] = _octal(uid if 0 <= uid <= _MAX_OCTAL_7 else 0, 8)
    header[116:124] = _octal(gid if 0 <= gid <= _MAX_OCTAL_7 else 0, 8)
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(mtime, 12)
    header[148:156] = b"        "
    header[156] = typeflag
    header[157 : 157 + len(linkname)] = linkname
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _fits_ustar(value: bytes) -> bool:
    return len(value) <= 100 and value.isascii()


def header(
    name: bytes,
    *,
    typeflag: int,
    mode: int,
    mtime_ns: int,
    size: int = 0,
    linkname: bytes = b"",
    uid: int = 0,
    gid: int = 0,
) -> bytes:
    """The header block(s) of one entry: a PAX extended header first when a
    field does not fit ustar, then the ustar header."""
    records: list[bytes] = []
    binary = False
    if not _fits_ustar(name):
        records.append(_pax_record(b"path", name))
        binary = binary or not _is_utf8(name)
        name = b""
    if not _fits_ustar(linkname):
        records.append(_pax_record(b"linkpath", linkname))
        binary = binary or not _is_utf8(linkname)
        linkname = b""
    if size > _MAX_OCTAL_11:
        records.append(_pax_record(b"size", b"%d" % size))
        ustar_size = 0
    else:
        ustar_size = size
    seconds = mtime_ns // _NS
    if mtime_ns % _NS or not 0 <= seconds <= _MAX_OCTAL_11:
        records.append(_pax_record(b"mtime", _format_mtime(mtime_ns)))
    ustar_mtime = seconds if 0 <= seconds <= _MAX_OCTAL_11 else 0
    entry = _ustar(name, mode, uid, gid, ustar_size, ustar_mtime, typeflag, linkname)
    if not records:
        return entry
    if binary:
        # Names are bytes on POSIX; PAX says values are UTF-8 unless told otherwise.
        records.insert(0, _pax_record(b"hdrcharset", b"BINARY"))
    data = b"".join(records)
    extended = _ustar(b"././@PaxHeader", 0o644, 0, 0, len(data), 0, PAX_LOCAL, b"")
    return extended + data + bytes(padding(len(data))) + entry


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class Header:
    name: bytes
    typeflag: int
    mode: int
    size: int
    mtime_ns: int
    linkname: bytes


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:
        # GNU base-256, for values that do not fit in octal.
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveRejected("the archive has a damaged header") from None


def _cstring(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def is_zero_block(block: bytes) -> bool:
    return block == bytes(BLOCK)


def parse_header(block: bytes) -> Header:
    stored = _number(block[148:156])
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != unsigned:
        # Some old writers summed signed bytes.
        high = sum(1 for b in block[:148] if b >= 0x80) + sum(1 for b in block[156:] if b >= 0x80)
        signed = unsigned - 256 * high
        if stored != signed:
            raise ArchiveRejected("the archive has a damaged header")
    name = _cstring(block[0:100])
    if block[257:263] == b"ustar\x00":
        prefix = _cstring(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    typeflag = block[156]
    return Header(
        name=name,
        typeflag=typeflag,
        mode=_number(block[100:108]),
        size=_number(block[124:136]),
        mtime_ns=_number(block[136:148]) * _NS,
        linkname=_cstring(block[157:257]),
    )


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise ArchiveRejected("the archive has a damaged extended header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveRejected("the archive has a damaged extended header") from None
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1] != 0x0A:
            raise ArchiveRejected("the archive has a damaged extended header")
        key, sep, value = data[space + 1 : end - 1].partition(b"=")
        if not sep:
            raise ArchiveRejected("the archive has a damaged extended header")
        records[key] = value
        pos = end
    return records


def parse_pax_mtime(value: bytes) -> int:
    try:
        negative = value.startswith(b"-")
        whole, _, fraction = value.lstrip(b"-").partition(b".")
        ns = int(whole or b"0") * _NS + int((fraction[:9] or b"0").ljust(9, b"0"))
    except ValueError:
        raise ArchiveRejected("the archive has a damaged extended header") from None
    return -ns if negative else ns


def parse_pax_size(value: bytes) -> int:
    try:
        size = int(value)
    except ValueError:
        raise ArchiveRejected("the archive has a damaged extended header") from None
    if size < 0:
        raise ArchiveRejected("the archive has a damaged extended header")
    return size
