"""Message bodies: the transfer encoding the standard library would choose, chosen the same way, fast.

Where it sits: render.CompiledCampaign.build appends each text part with `add_part`;
the equivalence tests compare the result with the standard library's own bytes.
"""

from __future__ import annotations

import binascii
import re
from email import quoprimime

from mailtrain_sender.headers import MAX_LINE

_LINE_END = re.compile(r"\r\n|\r|\n")


def encode_body(text: str) -> tuple[str, bytes]:
    """(transfer encoding, body with CRLF line ends): the standard library's choice, made the same way."""
    lines = text.encode("utf-8").splitlines()
    if text.isascii() and max(map(len, lines), default=0) <= MAX_LINE:
        lines.append(b"")  # one join writes the final CRLF too
        return "7bit", b"\r\n".join(lines)
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), MAX_LINE)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        data = b"\r\n".join(lines) + b"\r\n"
        step = MAX_LINE // 4 * 3
        encoded = "".join(
            binascii.b2a_base64(data[i : i + step]).decode("ascii") for i in range(0, len(data), step)
        )
        return "base64", encoded.replace("\n", "\r\n").encode("ascii")
    if len(lines) <= 10:
        encoded = sniff_qp
    else:
        encoded = quoprimime.body_encode((b"\n".join(lines) + b"\n").decode("latin-1"), MAX_LINE)
    return "quoted-printable", _LINE_END.sub("\r\n", encoded).encode("ascii")


# Content-Type and Content-Transfer-Encoding of a part, and the empty line after them.
_HEADERS = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: {}\r\n\r\n'
PART_HEADERS = {
    (subtype, cte): _HEADERS.format(subtype, cte).encode()
    for subtype in ("plain", "html")
    for cte in ("7bit", "quoted-printable", "base64")
}


def add_part(parts: list[bytes], subtype: str, body: str) -> None:
    cte, data = encode_body(body)
    parts += (PART_HEADERS[subtype, cte], data)
