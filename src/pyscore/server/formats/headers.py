"""What reference sequences a BAM, VCF/BCF or CRAM names, read from its header (SAM/BAM spec
§4.2, VCF 4.3 §1.4, BCF2, CRAM 3 §8): htsget maps a region's name to the index's number."""

from __future__ import annotations

import contextlib
import re
import struct
import zlib

from pyscore.server.formats.bgzf import Blocks, FormatError


def bam_header(blocks: Blocks) -> tuple[int, list[str]]:
    """(uncompressed header length, reference names) of a BAM."""
    pos, refs = bam_references(blocks)
    return pos, [name for name, _ in refs]


def bam_references(blocks: Blocks) -> tuple[int, list[tuple[str, int]]]:
    """(uncompressed header length, (name, length) of each reference sequence) of a BAM."""
    buf = b""
    for data in blocks.prefix():
        buf += data
        try:
            if buf[:4] != b"BAM\x01":
                raise FormatError("not a BAM file")
            l_text = struct.unpack_from("<i", buf, 4)[0]
            pos = 8 + l_text
            n_ref = struct.unpack_from("<i", buf, pos)[0]
            pos += 4
            refs = []
            for _ in range(n_ref):
                l_name = struct.unpack_from("<i", buf, pos)[0]
                name = buf[pos + 4 : pos + 4 + l_name - 1].decode()
                refs.append((name, struct.unpack_from("<i", buf, pos + 4 + l_name)[0]))
                pos += 4 + l_name + 4
            if pos > len(buf):
                continue
            return pos, refs
        except struct.error:
            continue
    raise FormatError("BAM header is truncated or too large")


CONTIG = re.compile(r"^##contig=<.*?ID=([^,>]+)", re.MULTILINE)


CONTIG_LINE = re.compile(r"^##contig=<(.*)>\s*$", re.MULTILINE)
# what a contig without a length= may hold: the most a BAI/TBI bin can address
UNKNOWN_LENGTH = 2**29 - 1


def vcf_header(blocks: Blocks, bcf: bool) -> tuple[int, list[str]]:
    """(uncompressed header length, contig names in header order) of a VCF.gz or BCF."""
    pos, text = vcf_text(blocks, bcf)
    return pos, CONTIG.findall(text)


def vcf_references(blocks: Blocks, bcf: bool) -> list[tuple[str, int]]:
    """(name, length) of each contig a VCF.gz or BCF header declares (UNKNOWN_LENGTH where
    it gives none)."""
    refs = []
    for fields in CONTIG_LINE.findall(vcf_text(blocks, bcf)[1]):
        found = dict(re.findall(r"(\w+)=([^,]*)", fields))
        if "ID" in found:
            length = found.get("length", "")
            refs.append((found["ID"], int(length) if length.isdigit() else UNKNOWN_LENGTH))
    return refs


def vcf_text(blocks: Blocks, bcf: bool) -> tuple[int, str]:
    """(uncompressed header length, header text) of a VCF.gz or BCF."""
    buf = b""
    for data in blocks.prefix():
        buf += data
        if bcf:
            if len(buf) < 9:
                continue
            if buf[:3] != b"BCF":
                raise FormatError("not a BCF file")
            l_text = struct.unpack_from("<I", buf, 5)[0]
            if len(buf) >= 9 + l_text:
                return 9 + l_text, buf[9 : 9 + l_text].decode(errors="replace")
            continue
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if not buf.startswith(b"#", pos):
                return pos, buf[:pos].decode(errors="replace")
            pos = nl + 1
    if not bcf and buf:
        return len(buf), buf.decode(errors="replace")
    raise FormatError("header is truncated or too large")


def cram_names(head: bytes) -> list[str]:
    """Reference names from the SAM header text inside a CRAM's header container (`head`:
    the file's bytes up to its first data container)."""
    text = head.decode("latin-1")
    gz = head.find(b"\x1f\x8b\x08")  # htslib gzips the header block of CRAM 3
    if gz >= 0:
        with contextlib.suppress(zlib.error):
            text = zlib.decompressobj(31).decompress(head[gz:]).decode("latin-1")
    return re.findall(r"@SQ\t(?:[^\n]*\t)?SN:([^\t\n]+)", text)
