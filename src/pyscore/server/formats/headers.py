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
            names = []
            for _ in range(n_ref):
                l_name = struct.unpack_from("<i", buf, pos)[0]
                names.append(buf[pos + 4 : pos + 4 + l_name - 1].decode())
                pos += 4 + l_name + 4
            if pos > len(buf):
                continue
            return pos, names
        except struct.error:
            continue
    raise FormatError("BAM header is truncated or too large")


CONTIG = re.compile(r"^##contig=<.*?ID=([^,>]+)", re.MULTILINE)


def vcf_header(blocks: Blocks, bcf: bool) -> tuple[int, list[str]]:
    """(uncompressed header length, contig names in header order) of a VCF.gz or BCF."""
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
                text = buf[9 : 9 + l_text].decode(errors="replace")
                return 9 + l_text, CONTIG.findall(text)
            continue
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if not buf.startswith(b"#", pos):
                text = buf[:pos].decode(errors="replace")
                return pos, CONTIG.findall(text)
            pos = nl + 1
    if not bcf and buf:
        return len(buf), CONTIG.findall(buf.decode(errors="replace"))
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
