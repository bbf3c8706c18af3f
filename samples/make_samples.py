"""Recreate the two bundled sample images (run from the repository root).

reference.png: scikit-image's bundled ``astronaut`` photograph (public domain, NASA), 512x512.
candidate.jpg: the same photograph with a sticker added on the shoulder (a localised edit),
rotated by 3 degrees and zoomed in by 10 % about its centre (so its edges crop the
scene) and re-saved as JPEG at quality 90: ``diffall compare``
in auto mode aligns it back and reports the sticker as a localised edit.
"""

from pathlib import Path

import cv2
import numpy as np
from skimage import data


def main() -> None:
    here = Path(__file__).parent
    reference = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(here / "reference.png"), reference)
    edited = reference.copy()
    cv2.circle(edited, (400, 360), 28, (40, 40, 220), thickness=-1)
    cv2.circle(edited, (400, 360), 12, (240, 240, 240), thickness=-1)
    h, w = edited.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 3.0, 1.1)
    rotated = cv2.warpAffine(
        edited, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    cv2.imwrite(str(here / "candidate.jpg"), rotated, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert np.any(rotated != reference)


if __name__ == "__main__":
    main()
