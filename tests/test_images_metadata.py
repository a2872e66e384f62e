"""Served derivatives carry pixels only: no JPEG comment, EXIF, XMP or IPTC segment and no PNG text chunk survives."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image, PngImagePlugin

from sync_server import images

SECRET = b"crew-secret-7731"  # a string no encoder would produce on its own
XMP_NS = b"http://ns.adobe.com/xap/1.0/"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="34,3.0N" exif:UserComment="'
       + SECRET + b'"/></rdf:RDF></x:xmpmeta>')


def _gps_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "TestPhone"
    exif[0x9286] = SECRET.decode()  # UserComment
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (34.0, 3.0, 0.0), "W", (118.0, 15.0, 0.0)
    return exif


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_with_everything(tmp: Path) -> Path:
    """A JPEG with a COM comment, EXIF GPS, an XMP packet, an IPTC (APP13) block and an ICC profile."""
    img = Image.new("RGB", (120, 90), (200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, comment=b"COM " + SECRET, exif=_gps_exif())
    data = buf.getvalue()
    # XMP (APP1) and IPTC (APP13) go right after SOI, as cameras and editors write them.
    extra = _segment(0xE1, XMP_NS + b"\x00" + XMP) + _segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x10"
                                                               + b"\x1c\x02\x78\x00\x10" + SECRET)
    data = data[:2] + extra + data[2:]
    path = tmp / "in.jpg"
    path.write_bytes(data)
    return path


def png_with_everything(tmp: Path) -> Path:
    """A PNG with tEXt, zTXt and iTXt chunks (one of them XMP) and an eXIf chunk carrying GPS."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "tEXt " + SECRET.decode())
    info.add_text("Description", "zTXt " + SECRET.decode(), zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode(), zip=False)
    path = tmp / "in.png"
    Image.new("RGBA", (120, 90), (30, 200, 30, 128)).save(path, "PNG", pnginfo=info, exif=_gps_exif())
    return path


def jpeg_segments(data: bytes) -> list[int]:
    """Marker bytes of every segment before the first scan (where all metadata lives)."""
    assert data[:2] == b"\xff\xd8"
    pos, markers = 2, []
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        pos += 2 + length
    return markers


def test_inputs_really_carry_the_metadata(tmp_path: Path) -> None:
    jpeg = jpeg_with_everything(tmp_path).read_bytes()
    assert {0xFE, 0xE1, 0xED} <= set(jpeg_segments(jpeg)) and SECRET in jpeg and XMP_NS in jpeg
    with Image.open(tmp_path / "in.jpg") as img:
        assert img.getexif().get_ifd(0x8825)
    png = png_with_everything(tmp_path).read_bytes()
    assert b"tEXt" in png and b"zTXt" in png and b"iTXt" in png and b"eXIf" in png


def test_jpeg_derivative_has_no_comment_exif_xmp_or_iptc(tmp_path: Path) -> None:
    src = jpeg_with_everything(tmp_path)
    for variant in ("thumb", "display"):
        out = images.make_derivative(src, variant, images.JPEG)
        markers = jpeg_segments(out)
        # Allowed before the scan: APP0 (JFIF), APP2 (ICC colour profile), tables, frame header, restart interval.
        assert set(markers) <= {0xE0, 0xE2, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD, 0xDA}, [hex(m) for m in markers]
        assert SECRET not in out and XMP_NS not in out and b"Exif" not in out and b"Photoshop" not in out
        with Image.open(io.BytesIO(out)) as img:
            assert "comment" not in img.info and not img.getexif()


def test_png_derivative_has_no_text_chunks_or_exif(tmp_path: Path) -> None:
    src = png_with_everything(tmp_path)
    out = images.make_derivative(src, "thumb", images.PNG)
    assert out[:3] == b"\xff\xd8\xff"  # derivatives are always JPEG
    assert set(jpeg_segments(out)) <= {0xE0, 0xE2, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD, 0xDA}
    assert SECRET not in out and XMP_NS not in out and b"Exif" not in out
    assert b"tEXt" not in out and b"iTXt" not in out and b"zTXt" not in out
