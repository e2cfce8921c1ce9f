"""Finding a ``.npy`` member inside a zip archive and checking that its bytes are all there.

:func:`locate_member` reads the archive's central directory (its table of contents at
the end of the file) and the member's own local header, and returns an
:class:`ArchiveMember`: where the member's data lies (byte offsets into the archive),
its sizes, compression and CRC-32.  Damage is caught here, before any row is read: a
truncated download, a member cut short, headers that disagree.  :mod:`.archives`
reads the rows.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import PerturbscoreError
from .readers import NPZ_MEMBER_SEP, list_names

#: Local file header: signature, then fixed fields; name and extra lengths at 26..30.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"

_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflated",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
    9: "deflate64",
    93: "zstd",
}


@dataclass(frozen=True)
class ArchiveMember:
    """Where one ``.npy`` member lies inside a zip archive (sizes from its directory)."""

    archive: Path
    name: str  # full name inside the archive, e.g. "raw_scores/final_ref.npy"
    label: str  # what messages call it: "archive.zip::name"
    kind: str  # "zip" or "npz"
    method: int  # zipfile.ZIP_STORED or zipfile.ZIP_DEFLATED
    data_offset: int  # first byte of the member's (compressed) data in the archive
    compress_size: int
    file_size: int
    crc: int

    @property
    def method_name(self) -> str:
        return _METHODS.get(self.method, f"method {self.method}")


def _by_name(archive: Path, keys: dict[str, str], member: str) -> str | None:
    """The key ``member`` names: itself, or the one key whose last path part it is."""
    if member in keys:
        return member
    by_base = [k for k in keys if PurePosixPath(k).name == member]
    if len(by_base) > 1:
        raise PerturbscoreError(
            f"{archive}{NPZ_MEMBER_SEP}{member}: {len(by_base)} members of the archive are "
            f"named {member} ({list_names(sorted(by_base))}); name one with its folder, e.g. "
            f"'{archive}{NPZ_MEMBER_SEP}{sorted(by_base)[0]}'."
        )
    return by_base[0] if by_base else None


def _pick_archive_member(archive: Path, keys: dict[str, str], member: str | None, kind: str) -> str:
    """The full member name for what the user wrote (``keys``: user-facing key -> name).

    An exact key wins; otherwise a key whose last path part equals ``member`` (a file in
    a folder inside the archive), if exactly one does.  A zip member may be named
    without its ``.npy`` and an ``.npz`` member with it (``x.npz::ref.npy``, the name
    ``unzip -l`` shows), when both spellings cannot name two different arrays.
    """
    placeholder = "<member>.npy" if kind == "zip" else "<member>"
    listing = list_names(sorted(keys)) if keys else "no .npy arrays"
    if member is None:
        if len(keys) == 1:
            return next(iter(keys.values()))
        raise PerturbscoreError(
            f"{archive}: holds {len(keys)} .npy arrays ({listing}); name one as "
            f"'{archive}{NPZ_MEMBER_SEP}{placeholder}'."
        )
    if kind == "npz":
        other = member.removesuffix(".npy")
    else:
        other = member if member.endswith(".npy") else f"{member}.npy"
    found = _by_name(archive, keys, member)
    found_other = _by_name(archive, keys, other) if other and other != member else None
    if found and found_other and found != found_other:
        raise PerturbscoreError(
            f"{archive}{NPZ_MEMBER_SEP}{member}: names two arrays of the archive, {found} and "
            f"{found_other}; write '{archive}{NPZ_MEMBER_SEP}{found}' or "
            f"'{archive}{NPZ_MEMBER_SEP}{found_other}' exactly."
        )
    if found or found_other:
        return keys[found or found_other or ""]
    how = (
        f"name a zip member with its .npy, e.g. '{archive}{NPZ_MEMBER_SEP}{sorted(keys)[0]}'"
        if kind == "zip" and keys
        else (
            f"name an .npz member as numpy.load does, e.g. "
            f"'{archive}{NPZ_MEMBER_SEP}{sorted(keys)[0]}'"
            if keys
            else "the archive needs .npy members"
        )
    )
    raise PerturbscoreError(
        f"{archive}{NPZ_MEMBER_SEP}{member}: no array named {member} in the archive; it holds "
        f"{listing}; {how}."
    )


def locate_member(archive: str | Path, member: str | None, kind: str) -> ArchiveMember:
    """Find ``member`` in a zip archive and check that its bytes are all there.

    Parameters
    ----------
    archive : str or Path
        A ``.zip`` of ``.npy`` files (``kind="zip"``; members named with ``.npy``) or an
        ``.npz`` (``kind="npz"``; members named without it, as ``numpy.load`` does).
    member : str, optional
        Member name, its base name when it sits in a folder and no other member shares
        it, or None when the archive holds one array.
    kind : {"zip", "npz"}

    Raises
    ------
    PerturbscoreError
        Missing file; no zip central directory (a truncated download); unknown,
        ambiguous, encrypted or unsupported-compression member; member data running
        past the central directory or the end of the file (a member cut short).
    """
    p = Path(archive)
    label = f"{p}{NPZ_MEMBER_SEP}{member}" if member else str(p)
    if not p.is_file():
        raise PerturbscoreError(f"{label}: prediction file not found. Check the path.")
    size = p.stat().st_size
    every, start_dir = _read_directory(p, label, size)
    npy = {i.filename: i for i in every if i.filename.endswith(".npy") and not i.is_dir()}
    keys = {(n if kind == "zip" else n[: -len(".npy")]): n for n in npy}
    name = _pick_archive_member(p, keys, member, kind)
    info = npy[name]
    key = name if kind == "zip" else name[: -len(".npy")]
    label = f"{p}{NPZ_MEMBER_SEP}{key}"
    _check_method(info, label)
    data_offset = _data_offset(p, info, label)
    _check_extent(info, every, data_offset, size, start_dir, label)
    return ArchiveMember(
        archive=p,
        name=name,
        label=label,
        kind=kind,
        method=info.compress_type,
        data_offset=data_offset,
        compress_size=info.compress_size,
        file_size=info.file_size,
        crc=info.CRC,
    )


def _read_directory(p: Path, label: str, size: int) -> tuple[list[zipfile.ZipInfo], int]:
    """The archive's members and where its central directory starts."""
    try:
        with zipfile.ZipFile(p) as zf:
            every = zf.infolist()
            # Where the central directory starts: member data must end before it.
            start_dir = int(getattr(zf, "start_dir", size))
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error) as exc:
        with p.open("rb") as fh:
            head = fh.read(6)
        if head == b"\x93NUMPY":
            raise PerturbscoreError(
                f"{label}: this is a plain .npy array, not a zip or npz archive; drop the "
                "batch's format setting (or set format = \"npy\")."
            ) from exc
        if not head.startswith(b"PK"):
            raise PerturbscoreError(
                f"{label}: not a zip archive ({size} bytes that do not start with a zip "
                "signature); check the path, or the batch's format setting."
            ) from exc
        raise PerturbscoreError(
            f"{label}: not a complete zip archive ({size} bytes): its table of contents, "
            "the central directory at the end of the file, is missing or damaged, as after "
            "a truncated download. Download the archive again."
        ) from exc
    return every, start_dir


def _check_method(info: zipfile.ZipInfo, label: str) -> None:
    """Refuse encrypted members and compressions that cannot be streamed."""
    if info.flag_bits & 0x1:
        raise PerturbscoreError(
            f"{label}: the member is encrypted; unpack it with its password and re-create "
            "the archive without one."
        )
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise PerturbscoreError(
            f"{label}: the member is compressed with "
            f"{_METHODS.get(info.compress_type, f'method {info.compress_type}')}, which cannot "
            "be streamed; re-create the archive stored (zip -0) or deflated (zip)."
        )


def _data_offset(p: Path, info: zipfile.ZipInfo, label: str) -> int:
    """The member's first data byte, from its local header (checked against the directory)."""
    with open(p, "rb") as fp:
        header = os.pread(fp.fileno(), _LOCAL_HEADER.size, info.header_offset)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
        raise PerturbscoreError(
            f"{label}: the archive is damaged: no member header at byte {info.header_offset} "
            "where its table of contents says the member starts. Download the archive again."
        )
    fields = _LOCAL_HEADER.unpack(header)
    flags, method, local_crc = fields[3], fields[4], fields[7]
    # Without a data descriptor (flag bit 3) the local header repeats the CRC-32: the
    # two copies disagreeing means one was damaged, which is cheaper to catch now than
    # after streaming the member.
    if method != info.compress_type or (not flags & 0x8 and local_crc != info.CRC):
        raise PerturbscoreError(
            f"{label}: the archive is damaged: the member's own header (method {method}, "
            f"CRC-32 {local_crc:08x}) disagrees with its table of contents (method "
            f"{info.compress_type}, CRC-32 {info.CRC:08x}). Download the archive again."
        )
    # The local header's extra field (ZIP64 sizes, timestamps) may differ in length
    # from the central directory's, so the data offset must come from it.
    name_len, extra_len = fields[-2], fields[-1]
    return int(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)


def _check_extent(
    info: zipfile.ZipInfo,
    every: list[zipfile.ZipInfo],
    data_offset: int,
    size: int,
    start_dir: int,
    label: str,
) -> None:
    """Refuse a member whose data runs into what follows it, or whose sizes disagree."""
    data_end = data_offset + info.compress_size
    # The member's data must end before whatever follows it: the next member's header,
    # the central directory, or the end of the file.
    bounds = [(size, "the end of the file")]
    if start_dir > info.header_offset:
        bounds.append((start_dir, "the archive's table of contents"))
    after = [i.header_offset for i in every if i.header_offset > info.header_offset]
    if after:
        bounds.append((min(after), "the next member"))
    limit, where = min(bounds)
    if data_end > limit:
        raise PerturbscoreError(
            f"{label}: the member is cut short: the archive says it holds "
            f"{info.compress_size} bytes from byte {data_offset}, but {where} comes after "
            f"{max(0, limit - data_offset)} of them. Download the archive again."
        )
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise PerturbscoreError(
            f"{label}: the archive is damaged: a stored member of {info.file_size} bytes "
            f"takes {info.compress_size} bytes in the archive. Download the archive again."
        )
