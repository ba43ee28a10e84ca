"""Camera poses: the clearance check names the terrain height, and refuses a position with no terrain."""

from __future__ import annotations

import pytest

from crosslocate.dem.poses import MIN_CAMERA_CLEARANCE_M, check_camera_clearance
from crosslocate.errors import OutsideCoverageError, RenderError


def test_camera_clearance_below_inside_clear_and_outside():
    check_camera_clearance(7.5, 46.5, 1000.0 + MIN_CAMERA_CLEARANCE_M, 1000.0)  # exactly clear: fine
    with pytest.raises(RenderError, match=r"altitude 900\.0 m is below the terrain, which is at 1000\.0 m there; "
                       r"give an altitude of at least 1000\.5 m \(or omit --alt"):  # fmt: skip
        check_camera_clearance(7.5, 46.5, 900.0, 1000.0)
    with pytest.raises(RenderError, match=r"1000\.2 m is inside the terrain.*\(or leave it out\)"):
        check_camera_clearance(7.5, 46.5, 1000.2, 1000.0, fix="leave it out")
    with pytest.raises(OutsideCoverageError, match=r"lon 7\.50000, lat 46\.50000 is outside the DEM coverage") as info:
        check_camera_clearance(7.5, 46.5, 900.0, float("nan"))  # no terrain known there (not "at nan m")
    assert "nan" not in str(info.value)
