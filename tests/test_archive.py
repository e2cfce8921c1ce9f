"""Scoring straight from a zip of ``.npy`` files, as the study's archive is downloaded.

Archives are built with Python's ``zipfile`` from the demo data; every run over an
archive must give tables byte-identical to the run over the unpacked files, whatever
the compression, folder prefix, ZIP64, chunk size or thread count.  Damaged archives
go through the console script: exit 2, one message naming archive, member and
problem, nothing written.
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from perturbscore.demo import write_demo_dataset
from perturbscore.pipeline import RunOptions, run_path

from .conftest import run_cli

RUN_FILE = "stablefm.toml"
REF_STAB = "final_ref_preds_stab_snps_strand.npy"
LAST = "final_ref_preds_top_snps_strand.npy"  # the last member, in name order


def _npy_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("final_*.npy"))


def make_zip(
    folder: Path,
    name: str,
    method: int = zipfile.ZIP_STORED,
    prefix: str = "",
    zip64: bool = False,
) -> Path:
    """Zip the demo's eight ``.npy`` files as ``prefix + file name`` (like ``zip -r``)."""
    path = folder / name
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        if prefix:
            zf.writestr(zipfile.ZipInfo(prefix), b"")  # the folder entry zip -r writes
        for f in _npy_files(folder):
            with zf.open(prefix + f.name, "w", force_zip64=zip64) as dst:
                dst.write(f.read_bytes())
    return path


def archive_run_file(folder: Path, archive: str, fmt: str | None = None) -> Path:
    """The demo run file with every prediction path pointing into ``archive``."""
    text = (folder / RUN_FILE).read_text()
    text = re.sub(r'"(final_[a-z_]+\.npy)"', rf'"{archive}::\1"', text)
    if fmt:
        text = text.replace('variants = "', f'format = "{fmt}", variants = "')
    path = folder / f"{archive}.toml"
    path.write_text(text)
    return path


def tables(out: Path) -> dict[str, bytes]:
    """Every written table's bytes (the manifest names the inputs, so it differs)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive") / "study"
    write_demo_dataset(folder)
    return folder


@pytest.fixture(scope="module")
def unpacked(demo: Path) -> dict[str, bytes]:
    """Tables of the run over the unpacked ``.npy`` files (the expected bytes)."""
    out = demo / "unpacked-out"
    r = run_cli("run", demo / RUN_FILE, "--out", out, "--threads", "1")
    assert r.returncode == 0, r.stderr
    found = tables(out)
    assert len(found) == 4
    return found


CASES = [
    # (compression, folder prefix, forced ZIP64, chunk rows)
    (zipfile.ZIP_STORED, "", False, "1"),
    (zipfile.ZIP_STORED, "raw_scores/", False, "7"),
    (zipfile.ZIP_STORED, "raw_scores/", True, "all"),
    (zipfile.ZIP_DEFLATED, "", False, "all"),
    (zipfile.ZIP_DEFLATED, "raw_scores/", False, "1"),
    (zipfile.ZIP_DEFLATED, "", True, "7"),
]


@pytest.mark.parametrize(("method", "prefix", "zip64", "chunk"), CASES)
def test_cli_run_over_archive_is_byte_identical(
    demo: Path, unpacked: dict[str, bytes], method: int, prefix: str, zip64: bool, chunk: str
) -> None:
    name = f"raw_{method}_{len(prefix)}_{int(zip64)}_{chunk}.zip"
    make_zip(demo, name, method, prefix, zip64)
    # Members in a folder are named by their base name (unique here).
    run_file = archive_run_file(demo, name)
    out = demo / f"out-{name}"
    chunk_rows = "53" if chunk == "all" else chunk  # 53: the largest batch
    r = run_cli("run", run_file, "--out", out, "--chunk-rows", chunk_rows, "--threads", "3")
    assert r.returncode == 0, r.stderr
    assert tables(out) == unpacked


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("chunk", [1, 5, 53])
def test_library_run_over_archive_threads(
    demo: Path, unpacked: dict[str, bytes], method: int, chunk: int, tmp_path: Path
) -> None:
    name = f"lib_{method}.zip"
    if not (demo / name).exists():
        make_zip(demo, name, method, "raw_scores/")
    run_file = archive_run_file(demo, name)
    out = tmp_path / "out"
    run_path(run_file, out, RunOptions(chunk_rows=chunk, threads=3, progress=False))
    assert tables(out) == unpacked


def test_format_zip_in_the_run_file(demo: Path, unpacked: dict[str, bytes]) -> None:
    # An archive whose name does not end in .zip: the batch names the format.
    make_zip(demo, "raw_scores.download", zipfile.ZIP_DEFLATED, "raw_scores/")
    run_file = archive_run_file(demo, "raw_scores.download", fmt="zip")
    out = demo / "out-format-zip"
    r = run_cli("run", run_file, "--out", out, "--threads", "3")
    assert r.returncode == 0, r.stderr
    assert tables(out) == unpacked


@pytest.mark.parametrize("kind", ["zip", "npz"])
def test_deflated_members_are_not_restarted_per_block(
    demo: Path,
    unpacked: dict[str, bytes],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    if kind == "zip":
        make_zip(demo, "restarts.zip", zipfile.ZIP_DEFLATED)
        run_file = archive_run_file(demo, "restarts.zip")
    else:
        np.savez_compressed(demo / "restarts.npz", **{f.stem: np.load(f) for f in _npy_files(demo)})
        run_file = demo / "restarts.npz.toml"
        text = (demo / RUN_FILE).read_text()
        run_file.write_text(re.sub(r'"(final_[a-z_]+)\.npy"', r'"restarts.npz::\1"', text))
    with caplog.at_level(logging.DEBUG, logger="perturbscore"):
        run_path(run_file, tmp_path / "out", RunOptions(chunk_rows=3, threads=4, progress=False))
    assert tables(tmp_path / "out") == unpacked
    restarts = [r.getMessage() for r in caplog.records if "decompression restarts" in r.message]
    assert restarts == []


# --- damaged archives, through the console script ------------------------------------


def _eocd(data: bytes) -> int:
    """Offset of the (non-ZIP64) end-of-central-directory record."""
    at = data.rfind(b"PK\x05\x06")
    assert at >= 0
    return at


def cut_member_data(archive: Path, member: str, n_cut: int) -> None:
    """Remove ``n_cut`` bytes from the end of ``member``'s data, keeping a valid table.

    The central directory still records the old size: the member is cut short while the
    archive's table of contents (and every other member) stays readable.
    """
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
        later = sorted(
            i.header_offset for i in zf.infolist() if i.header_offset > info.header_offset
        )
    data = bytearray(archive.read_bytes())
    cd_offset = _central_directory_offset(bytes(data))
    end = later[0] if later else cd_offset  # the member's data ends here
    del data[end - n_cut : end]
    # Shift the recorded offsets of everything after the cut.
    struct.pack_into("<L", data, _eocd(bytes(data)) + 16, cd_offset - n_cut)
    pos = cd_offset - n_cut
    while data[pos : pos + 4] == b"PK\x01\x02":
        (offset,) = struct.unpack_from("<L", data, pos + 42)
        if offset > info.header_offset:
            struct.pack_into("<L", data, pos + 42, offset - n_cut)
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        pos += 46 + n + m + k
    archive.write_bytes(bytes(data))


def _central_directory_offset(data: bytes) -> int:
    (offset,) = struct.unpack_from("<L", data, _eocd(data) + 16)
    return int(offset)


def set_crc(archive: Path, member: str, crc: int, local: bool = True) -> None:
    """Record a wrong CRC-32 for ``member`` in the central directory (data untouched).

    ``local``: also in the member's own header, so that only decompressing the whole
    member can tell.
    """
    data = bytearray(archive.read_bytes())
    pos = _central_directory_offset(bytes(data))
    while data[pos : pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        if data[pos + 46 : pos + 46 + n].decode() == member:
            struct.pack_into("<L", data, pos + 16, crc)
            if local:
                (header,) = struct.unpack_from("<L", data, pos + 42)
                struct.pack_into("<L", data, header + 14, crc)
        pos += 46 + n + m + k
    archive.write_bytes(bytes(data))


def _fails(run_file: Path, out: Path, *patterns: str) -> str:
    r = run_cli("run", run_file, "--out", out, "--threads", "3", "--chunk-rows", "7")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert message.startswith("perturbscore: error: ")
    for p in patterns:
        assert re.search(p, message), (p, message)
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    return message


def test_truncated_download(demo: Path, tmp_path: Path) -> None:
    archive = make_zip(demo, "truncated.zip")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])  # the central directory is at the end
    _fails(
        archive_run_file(demo, "truncated.zip"),
        tmp_path / "out",
        r"truncated\.zip::final_\w+\.npy",
        "not a complete zip archive",
        "truncated download",
        "Download the archive again",
    )


@pytest.mark.parametrize(
    ("method", "member", "before"),
    [
        (zipfile.ZIP_STORED, REF_STAB, "the next member"),
        (zipfile.ZIP_DEFLATED, REF_STAB, "the next member"),
        (zipfile.ZIP_STORED, LAST, "the archive's table of contents"),
    ],
)
def test_member_cut_short(
    demo: Path, tmp_path: Path, method: int, member: str, before: str
) -> None:
    name = f"cut_{method}_{member}.zip"
    archive = make_zip(demo, name, method, "raw_scores/")
    cut_member_data(archive, "raw_scores/" + member, 100)
    with zipfile.ZipFile(archive) as zf:  # the table of contents is still fine
        assert len(zf.namelist()) == 9
    _fails(
        archive_run_file(demo, name),
        tmp_path / "out",
        rf"{name}::raw_scores/{member}",
        "member is cut short",
        f"but {before} comes after",
        "Download the archive again",
    )


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npy_inside_the_archive_cut_short(demo: Path, tmp_path: Path, method: int) -> None:
    name = f"short_npy_{method}.zip"
    archive = make_zip(demo, name, method)
    # Re-zip with one truncated .npy (zipped from an incomplete copy).
    with zipfile.ZipFile(archive, "w", compression=method) as zf:
        for f in _npy_files(demo):
            data = f.read_bytes()
            zf.writestr(f.name, data[:-12] if f.name == REF_STAB else data)
    _fails(
        archive_run_file(demo, name),
        tmp_path / "out",
        rf"{name}::{REF_STAB}",
        "the .npy inside the archive is cut short",
    )


def test_bad_crc_on_a_deflated_member(demo: Path, tmp_path: Path) -> None:
    archive = make_zip(demo, "crc.zip", zipfile.ZIP_DEFLATED)
    member = "final_alt_preds_top_snps_new_strand.npy"  # read last: found at its end
    with zipfile.ZipFile(archive) as zf:
        crc = zf.getinfo(member).CRC
    set_crc(archive, member, crc ^ 0x5A5A5A5A)
    _fails(
        archive_run_file(demo, "crc.zip"),
        tmp_path / "out",
        rf"crc\.zip::{member}",
        "member is damaged",
        f"CRC-32 is {crc:08x} but the archive records {crc ^ 0x5A5A5A5A:08x}",
    )


def test_crc_copies_disagree_at_open(demo: Path, tmp_path: Path) -> None:
    archive = make_zip(demo, "crc2.zip", zipfile.ZIP_STORED)
    set_crc(archive, REF_STAB, 1, local=False)
    _fails(
        archive_run_file(demo, "crc2.zip"),
        tmp_path / "out",
        rf"crc2\.zip::{REF_STAB}: the archive is damaged: the member's own header",
        "CRC-32 00000001",
    )


def test_corrupt_deflate_stream(demo: Path, tmp_path: Path) -> None:
    archive = make_zip(demo, "bits.zip", zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(REF_STAB)
    data = bytearray(archive.read_bytes())
    middle = info.header_offset + 30 + len(REF_STAB) + info.compress_size // 2
    data[middle : middle + 64] = bytes(64)  # zeros in the middle of the deflate stream
    archive.write_bytes(bytes(data))
    _fails(
        archive_run_file(demo, "bits.zip"),
        tmp_path / "out",
        rf"bits\.zip::{REF_STAB}",
        "member is damaged",
    )


def test_unknown_and_ambiguous_members(demo: Path, tmp_path: Path) -> None:
    make_zip(demo, "names.zip", prefix="raw_scores/")
    run_file = archive_run_file(demo, "names.zip")
    text = run_file.read_text()
    text = text.replace(f"names.zip::{REF_STAB}", "names.zip::final_ref_preds_stab.npy")
    run_file.write_text(text)
    message = _fails(
        run_file,
        tmp_path / "out",
        r"names\.zip::final_ref_preds_stab\.npy: no array named final_ref_preds_stab\.npy",
        "it holds raw_scores/final_alt_preds_stab_snps_new_strand.npy, ",
    )
    assert "[" not in message  # a listing, not a Python list
    # The same base name in two folders: ask for the folder.
    with zipfile.ZipFile(demo / "twice.zip", "w") as zf:
        for folder in ("old/", "new/"):
            for f in _npy_files(demo):
                zf.write(f, folder + f.name)
    _fails(
        archive_run_file(demo, "twice.zip"),
        tmp_path / "out",
        "2 members of the archive are named final_",
        "new/final_",
        "name one with its folder",
    )


def test_member_names_with_or_without_npy(tmp_path: Path) -> None:
    from perturbscore.archive_members import locate_member
    from perturbscore.errors import PerturbscoreError

    a = np.zeros((2, 1, 1), np.float32)
    np.savez(tmp_path / "p.npz", ref=a, alt=a)
    for name in ("ref", "ref.npy"):  # numpy.load's name, and the name unzip -l shows
        m = locate_member(tmp_path / "p.npz", name, "npz")
        assert (m.name, m.label) == ("ref.npy", f"{tmp_path / 'p.npz'}::ref")
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as zf:
        zf.writestr("raw/ref.npy", b"")
    for name in ("ref", "ref.npy", "raw/ref", "raw/ref.npy"):
        assert locate_member(tmp_path / "p.zip", name, "zip").name == "raw/ref.npy"
    # Two arrays the two spellings could mean: ask for the exact one.
    np.savez(tmp_path / "two.npz", **{"ref": a, "ref.npy": a})
    with pytest.raises(PerturbscoreError, match="names two arrays of the archive, ref.npy and ref"):
        locate_member(tmp_path / "two.npz", "ref.npy", "npz")
    assert locate_member(tmp_path / "two.npz", "ref", "npz").name == "ref.npy"
    with pytest.raises(PerturbscoreError, match="name a zip member with its .npy, e.g."):
        locate_member(tmp_path / "p.zip", "alt", "zip")


def test_unsupported_compression(demo: Path, tmp_path: Path) -> None:
    make_zip(demo, "bz.zip", zipfile.ZIP_BZIP2)
    _fails(
        archive_run_file(demo, "bz.zip"),
        tmp_path / "out",
        r"bz\.zip::final_\w+\.npy: the member is compressed with bzip2",
        r"zip -0",
    )


def test_example_run_file_alternative_reads_the_archive(
    demo: Path, unpacked: dict[str, bytes], tmp_path: Path
) -> None:
    """examples/stablefm.toml's commented groups, uncommented, over raw_scores.zip."""
    example = (Path(__file__).resolve().parents[1] / "examples" / RUN_FILE).read_text()
    head, sep, alternative = example.partition("# The same groups read from the downloaded")
    assert sep
    head = head[: head.index("\n[[groups]]")]
    body = "\n".join(
        line[2:] if line.startswith("# ") else ""
        for line in alternative.splitlines()[1:]
        if line.startswith("#")
    )
    folder = tmp_path / "download"
    shutil.copytree(demo, folder, ignore=shutil.ignore_patterns("*.zip", "*out*", "*.toml"))
    make_zip(folder, "raw_scores.zip", zipfile.ZIP_DEFLATED, "raw_scores/")
    for f in _npy_files(folder):
        f.unlink()  # only the archive is there, as after the download
    (folder / RUN_FILE).write_text(head + body)
    r = run_cli("run", folder / RUN_FILE, "--out", folder / "out", "--format", "rdata")
    assert r.returncode == 0, r.stderr
    assert tables(folder / "out") == unpacked


@pytest.mark.skipif(shutil.which("zip") is None, reason="Info-ZIP zip not installed")
@pytest.mark.parametrize("options", [["-0"], ["-6"], ["-0", "-fz"]])
def test_archive_made_by_the_zip_tool(
    demo: Path, unpacked: dict[str, bytes], tmp_path: Path, options: list[str]
) -> None:
    folder = tmp_path / "raw_scores"
    folder.mkdir()
    for f in _npy_files(demo):
        shutil.copy(f, folder / f.name)
    name = f"tool{''.join(options)}.zip"
    subprocess.run(
        ["zip", "-q", "-r", *options, str(demo / name), "raw_scores"], cwd=tmp_path, check=True
    )
    out = tmp_path / "out"
    r = run_cli("run", archive_run_file(demo, name), "--out", out, "--threads", "3")
    assert r.returncode == 0, r.stderr
    assert tables(out) == unpacked


def test_plain_npy_named_as_a_zip(demo: Path, tmp_path: Path) -> None:
    """format = "zip" on plain .npy files says what they are, not "truncated download"."""
    text = (demo / RUN_FILE).read_text().replace('variants = "', 'format = "zip", variants = "')
    run_file = demo / "plain-as-zip.toml"
    run_file.write_text(text)
    message = _fails(run_file, tmp_path / "out", "plain .npy array", 'format = \\"npy\\"')
    assert "truncated" not in message


def test_not_a_zip_at_all(demo: Path, tmp_path: Path) -> None:
    (demo / "notes.zip").write_text("these are not predictions\n")
    message = _fails(
        archive_run_file(demo, "notes.zip"), tmp_path / "out", "not a zip archive", "signature"
    )
    assert "truncated" not in message


def test_damaged_member_header(demo: Path, tmp_path: Path) -> None:
    """A deflated member whose .npy header is garbage: one sentence, no raw bytes."""
    archive = demo / "damaged.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in _npy_files(demo):
            data = bytearray(f.read_bytes())
            data[12:24] = b"\x00\xff{'shape'::"  # inside the header's dict literal
            zf.writestr(f.name, bytes(data))
    message = _fails(archive_run_file(demo, "damaged.zip"), tmp_path / "out", "header", "damaged")
    assert "\\x" not in message and "b'" not in message
