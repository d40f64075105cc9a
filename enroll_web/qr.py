"""The QR code, drawn here (never by a third-party service) as inline SVG markup."""
from __future__ import annotations

import qrcode
import qrcode.image.svg
from markupsafe import Markup


def qr_svg(text: str) -> Markup:
    """``text`` as an SVG QR code with a white quiet zone, sized by the stylesheet."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathFillImage,
                        error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    svg = image.to_string(encoding="unicode")
    # Drop the fixed size in mm (CSS sizes it) and keep module edges sharp when scaled.
    # The markup is generated from our own URI only, so it is safe to insert as is.
    svg = svg.replace("<svg ", '<svg class="qr-code" role="img" aria-label="QR code" '
                      'shape-rendering="crispEdges" ', 1)
    return Markup(_strip_size(svg))


def _strip_size(svg: str) -> str:
    head, sep, rest = svg.partition(">")
    kept = [part for part in head.split(" ")
            if not part.startswith(('width="', 'height="'))]
    return " ".join(kept) + sep + rest
