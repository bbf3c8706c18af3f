"""Feature-based alignment of image B onto image A: a homography, checked, refined, explained.

Algorithm
---------
1. **Grey copies.** Both images become ``uint8`` greyscale (16-bit input is scaled by one factor
   shared by A and B; RGBA is premultiplied by alpha, so transparent areas are black).
2. **Coarse match.** Keypoints and descriptors are found on copies reduced by an integer factor
   (``k x k`` block averages, so the longest side is at most ``DETECT_MAX_SIDE``; a 1920x1080
   frame becomes 960x540), matched by brute force (k=2) with Lowe's ratio test, and a homography
   B -> A is fitted with ``cv2.findHomography(..., cv2.USAC_MAGSAC)`` in full-resolution
   coordinates. ORB runs first (about 10 ms per 1080p image); when it yields no trustworthy
   transform, SIFT on CLAHE-equalised copies (about 10x slower, far better on low-contrast or
   heavily rescaled content) is tried.
3. **Sanity checks.** A homography is degenerate when it mirrors or folds B (a corner of B maps
   behind the camera, or the determinant is not positive), scales outside
   ``[MIN_SCALE, MAX_SCALE]``, shears beyond ``MAX_ANISOTROPY`` or has strong perspective (the
   projective denominator varies over B by more than ``MAX_PERSPECTIVE``). A degenerate
   homography falls back to ``cv2.estimateAffinePartial2D`` (rotation, uniform scale, shift).
4. **Refinement and verification** (``refine=True``). Feature positions are good to 0.3-3 px at
   full resolution (worse at A's corners when B covers only part of A), so: B's grey copy is
   warped into A's frame with the coarse estimate (full resolution up to ``REFINE_MAX_SIDE``),
   its tones are mapped onto A's (a monotone curve fitted on the overlap, so exposure, contrast
   or gamma changes do not bias the tracks), and up to ``REFINE_POINTS`` well-spread keypoints
   are tracked with pyramidal Lucas-Kanade (sub-pixel, forward-backward checked); when too few
   points track so, they are tracked again on B's levels as they are (on a text page the curve
   can wash thin strokes out: where the coarse fit is a few pixels off, B's ink meets A's
   paper). Tracks that
   agree within ``REFINE_THRESHOLD_PX`` (RANSAC) must number at least ``min_inliers`` and
   ``MIN_TRACK_AGREEMENT`` of all tracks, otherwise the transform is refused. The final map is
   the least-squares fit of the simplest adequate model (similarity, affine or homography,
   chosen by an F-test plus a minimum gain, because spurious perspective terms extrapolate
   badly to A's corners). It is kept only if it lowers the RMS residual of the tracks; on the
   test photographs it cuts the corner error from 0.26-7.2 px to 0.004-0.16 px.

Conventions
-----------
The homography maps a point ``(x, y, 1)`` of B (pixel centres at integer coordinates) to its
place in A. ``rotation_deg`` is the rotation that homography applies to B, counter-clockwise
positive as displayed (y axis pointing down): if B is A turned 6 degrees counter-clockwise,
``rotation_deg`` is about -6. ``scale`` > 1 means B's content appears larger in A than in B.

Cost (1920x1080 RGB pair, measured on 2 cores shared with other work): ``estimate_alignment``
takes about 55-60 ms of CPU on the ORB path (detection ~15, matching ~15, refinement ~25) and
``warp_into`` about 35 (bicubic warp ~30, mask ~4); wall-clock medians of both together were
80-180 ms depending on the load. A pair that needs SIFT, or that has no transform at all
(both detectors run), costs 200-600 ms.

Modules
-------
``result`` (:class:`Alignment`), ``features`` (grey copies, keypoints, matches), ``coarse``
(the robust fit and its fallback), ``geometry`` (mapped points, the sanity checks, corner
error, overlap), ``refine`` (tone mapping, Lucas-Kanade tracks, model selection),
``estimate`` (:func:`estimate_alignment`, the whole procedure) and ``warp``
(:func:`warp_into`). The package imports nothing of ours outside ``core.imaging``.
"""
