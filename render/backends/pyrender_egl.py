"""OpenGL offscreen render backend (pyrender's EGL / OSMesa platforms, Mesa llvmpipe or a GPU).

Pipeline: :func:`crosslocate.render.mesh.build_terrain_mesh` turns the terrain pyramid into one LOD
mesh per block (prepare once, render many); each camera is one draw into a single-sample framebuffer
with two colour attachments written by our own GLSL 3.30 program:

* ``R32F``  -- the view-space z-depth in metres, written by the fragment shader (perspective-correct
  interpolation of an affine function of the vertex, so it is the exact fp32 depth of the surface).
* ``R8UI``  -- the LandCover id of the pyramid node nearest to the fragment's ground point, looked up
  per fragment in an integer texture array of the levels' class grids (the level is a ``flat``
  vertex attribute of the tile), exactly the ``cpu`` backend's rule; no lighting, no blending, no
  anti-aliasing; cleared to ``SKY_CLASS``.

Why not pyrender's ``Renderer``: it always renders into a 4x multisampled framebuffer, so depth or
class values packed into colours are averaged at every edge, and its depth image is the linearised
24-bit depth buffer. With ``znear`` = 5 m that buffer resolves depth in steps of about
``z**2 / (znear * 2**24)``: 0.3 m at 5 km, 11 m at 30 km, 43 m at 60 km (see
:func:`depth24_step_m`). Here the stored depth never goes through the depth buffer; the depth buffer
only decides visibility, and it is ``GL_DEPTH_COMPONENT32F`` with reversed z (``glClipControl``
zero-to-one, near -> 1, far -> 0), whose float spacing keeps the relative resolution near 2**-23
at every distance (about 7 mm at 60 km), so distant ridges occlude correctly.

**Depth error bound** (analytic plane seen from 300 m up to 55 km, 96 views, measured against the
ray/plane intersection; ``tests/render/test_pyrender_backend.py`` asserts it): the rasteriser snaps
vertices to ``2**-GL_SUBPIXEL_BITS`` px (:attr:`PyrenderBackend.subpixel_bits`; 8 on llvmpipe and on
NVIDIA's driver), so a pixel may show the surface up to half a step (1/512 px) from its centre, and
its depth is off by at most the depth change over that distance (plus fp32 rounding). llvmpipe stays
far inside it: relative error median 1e-7, 99.9th percentile < 1e-5, worst pixel 1.3e-3 px of image
position. An NVIDIA H200 (driver 580) uses all of it: median 2.4e-5 relative (6e-4 px), worst pixel
1.94e-3 px, at every distance alike; at grazing incidence just below a horizon the depth changes by
tens of percent across one pixel, so there the relative error reaches 1e-3 on either.
Other sources: float32 vertex coordinates (terrain-frame metres, ~4 mm at 60 km) and fp32 rasterisation. For comparison, stock pyrender
(``OffscreenRenderer.render`` depth, znear 5 m, zfar 60 km) on the same scene is off by a median
0.6 % below 5 km, 5 % at 5-20 km, 16 % at 20-40 km and 26 % at 40-60 km, far beyond the 24-bit
steps; most likely its 4x MSAA depth comes from a sample off the pixel centre, which matters at
grazing incidence. The LOD
geometry (coarser pyramid levels far away) is a separate, larger modelling difference.

Range: a fragment whose horizontal distance from the camera exceeds ``RenderConfig.range_m`` is
discarded (sky), exactly per pixel. Sky: depth ``SKY_DEPTH_M``, class ``SKY_CLASS``. GL's
bottom-up rows are flipped once, when read back.

Near plane: terrain is rendered at every distance, like the ``cpu`` backend. The projection's near
plane sits at ``NEAR_PLANE_M`` (1 cm), not at ``RenderConfig.near_m``: with reversed float depth a
tiny near plane costs no precision, whereas a near plane of metres clips the ground right below a
camera standing on a steep slope (10 m above a 35 degree slope, the bottom rows look at ground 4 m
away), and a clipped heightfield shows sky there, not terrain.

Geometry: the mesh (:func:`crosslocate.render.mesh.build_terrain_mesh`) follows the terrain pyramid's
own level schedule (``TerrainLevel.max_distance_m``) and triangulation, the surface the ``cpu``
backend casts rays against, unless ``lod_base_m`` is given.

Shared terrain: one :class:`~crosslocate.render.terrain.LocalTerrain`
serves every position within ``terrain_reuse_m`` of its origin (:class:`~crosslocate.render.views.ViewRenderer` reuses it, so a
shard's neighbouring positions share one pyramid and its meshes). Its heights carry the refraction
lift ``k d^2 / (2R)`` measured from the origin; for a camera at horizontal ``p`` the lift must be
measured from the camera, and the difference ``k (|v - p|^2 - |v|^2) / (2R) = -(k/R) p.v + k |p|^2 / (2R)``
is affine in the vertex ``v``: the vertex shader adds it (``u_lift``), and the camera gets the same
correction, so the render equals a terrain built at the camera up to the level-of-detail schedule
(which follows the origin) and the lean of distant verticals. Curvature itself is exact anywhere
in the frame (ENU heights). Within ``RenderConfig.near_patch_cells`` DEM cells of the camera the
position's own finest level is drawn instead (:meth:`PyrenderBackend.render_near`, one depth buffer
for both draws): there the shared pyramid's nodes sample the DEM elsewhere, a visibly different
surface under the camera. ``crosslocate bench terrain`` measures shared against own pyramids.

Platform: ``PYOPENGL_PLATFORM`` is set from ``RenderConfig.gl_platform`` right before the lazy
``import pyrender``. PyOpenGL binds its platform at import, so once ``OpenGL`` is loaded with another
platform this backend refuses (:class:`BackendUnavailableError`) instead of switching. Nothing falls
back silently: if EGL cannot start, the error says to try ``gl_platform="osmesa"``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.schema import SKY_CLASS, SKY_DEPTH_M, Modality, modality_spec
from crosslocate.errors import BackendUnavailableError, RenderError, missing_dependency
from crosslocate.render.backends.base import FrameCamera, RenderBackend, ViewBatch
from crosslocate.render.camera import intrinsics
from crosslocate.render.mesh import TerrainMesh, build_terrain_mesh

if TYPE_CHECKING:
    from crosslocate.render.config import RenderConfig
    from crosslocate.render.terrain import LocalTerrain

logger = logging.getLogger(__name__)

#: PyOpenGL platform class name -> RenderConfig.gl_platform value.
_PLATFORM_NAMES: dict[str, str] = {"EGLPlatform": "egl", "OSMesaPlatform": "osmesa", "GLXPlatform": "glx"}

#: Near clipping plane of the projection, metres (module docstring: terrain at any distance is drawn).
NEAR_PLANE_M: float = 0.01
#: The far clipping plane is this multiple of the range (z-depth <= 3-D distance; the exact range
#: cut is the per-fragment horizontal-distance test).
_FAR_FACTOR: float = 2.0

#: Backend attributes holding one terrain's mesh state (the main terrain's, or the near patch's).
_SLOT_ATTRS: tuple[str, ...] = ("_terrain", "_mesh", "_focus", "_vao", "_buffers", "_cls_tex", "_lvl_geo", "_lvl_n")

#: Most pyramid levels the class lookup supports (size of the shader's uniform arrays).
MAX_LEVELS: int = 16

_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 a_pos;   // terrain frame (east, north, up), metres
layout(location = 1) in uint a_level; // pyramid level of the vertex's tile
uniform mat3 u_world_to_cam;          // to camera frame: x right, y down, z forward
uniform vec3 u_cam;                   // camera centre, terrain frame
uniform mat4 u_proj;                  // GL projection (camera looks down -z, y up), reversed z
uniform vec3 u_lift;                  // refraction lift relative to the camera: z += a x + b y + c
out float v_depth;
out vec2 v_dxy;
flat out uint v_level;
void main() {
    vec3 rel = vec3(a_pos.xy, a_pos.z + dot(u_lift.xy, a_pos.xy) + u_lift.z) - u_cam;
    vec3 pc = u_world_to_cam * rel;
    v_depth = pc.z;
    v_dxy = rel.xy;
    v_level = a_level;
    gl_Position = u_proj * vec4(pc.x, -pc.y, -pc.z, 1.0);
}
"""

_FRAGMENT_SHADER = """
#version 330 core
uniform float u_range2;               // squared horizontal range, m^2
uniform float u_cut2;                 // squared radius drawn by the near patch instead (0: none), m^2
uniform usampler2DArray u_cls;        // LandCover id of every node, one layer per level (row 0 north)
uniform vec3 u_lvl[16];               // per level: (x0 - cam_x, y0 - cam_y, spacing), metres
uniform ivec2 u_lvl_n[16];            // per level: (nx, ny)
in float v_depth;
in vec2 v_dxy;
flat in uint v_level;
layout(location = 0) out float o_depth;
layout(location = 1) out uint o_cls;
void main() {
    float d2 = dot(v_dxy, v_dxy);
    if (d2 > u_range2 || d2 < u_cut2) discard;
    o_depth = v_depth;
    int k = int(v_level);
    vec3 g = u_lvl[k];
    ivec2 n = u_lvl_n[k];
    int ci = clamp(int(floor((v_dxy.x - g.x) / g.z + 0.5)), 0, n.x - 1);
    int cj = clamp(int(floor((g.y - v_dxy.y) / g.z + 0.5)), 0, n.y - 1);
    o_cls = texelFetch(u_cls, ivec3(ci, cj, k), 0).r;   // class of the nearest node, like the cpu backend
}
"""


def depth24_step_m(z_m: float | npt.NDArray[np.float64], znear_m: float, zfar_m: float) -> Any:
    """Depth resolution (m) of a linearised 24-bit standard depth buffer at z-depth ``z_m``.

    ``dz = z**2 (f - n) / (n f 2**24)``: the error pyrender's ``read_depth_buf`` would have.
    """
    z = np.asarray(z_m, dtype=np.float64)
    return z * z * (zfar_m - znear_m) / (znear_m * zfar_m * 2.0**24)


def loaded_gl_platform() -> str | None:
    """The platform PyOpenGL is bound to in this process (``"egl"``, ``"osmesa"``, ...), or None if unloaded."""
    if "OpenGL.platform" not in sys.modules:
        return None
    plat = getattr(sys.modules["OpenGL.platform"], "PLATFORM", None)
    name = type(plat).__name__
    return _PLATFORM_NAMES.get(name, name.lower())


def select_gl_platform(platform: str) -> None:
    """Set ``PYOPENGL_PLATFORM`` before OpenGL loads; refuse to switch once it is loaded.

    With ``"egl"`` it also sets ``PYGLET_HEADLESS=true`` unless the user set it: ``import pyrender``
    loads pyglet's window module for its viewer, which without the option needs X11 libraries
    (libXrender) that a headless GPU server lacks, and offscreen EGL never opens a window.

    Raises
    ------
    BackendUnavailableError
        When PyOpenGL is already bound to another platform in this process.
    """
    loaded = loaded_gl_platform()
    if loaded is not None and loaded != platform:
        raise BackendUnavailableError(
            f"OpenGL is already loaded with platform {loaded!r} in this process; cannot switch to "
            f"gl_platform={platform!r}. Use gl_platform={loaded!r}, or run in a fresh process."
        )
    if platform == "egl" and "pyglet" not in sys.modules:  # pyglet reads its options once, at import
        os.environ.setdefault("PYGLET_HEADLESS", "true")
    if loaded is not None:
        return
    current = os.environ.get("PYOPENGL_PLATFORM")
    if current and current != platform:
        logger.warning("PYOPENGL_PLATFORM=%s is overridden by RenderConfig.gl_platform=%r", current, platform)
    os.environ["PYOPENGL_PLATFORM"] = platform


def _import_pyrender(platform: str) -> Any:
    select_gl_platform(platform)
    try:
        import pyrender
    except Exception as exc:
        if isinstance(exc, ImportError) and exc.name == "pyrender":
            raise missing_dependency("pyrender", "render") from exc
        # pyrender is there but what it loads fails: pyglet's X11 window code on a server without X11
        # libraries raises AttributeError or ImportError (osmesa, PYGLET_HEADLESS=false, or pyglet
        # imported before), or one of its modules is missing
        raise BackendUnavailableError(
            f"import pyrender failed: {type(exc).__name__}: {exc}; on a server without X11 libraries use "
            "gl_platform='egl' in a fresh process (crosslocate then sets PYGLET_HEADLESS=true), or backend='cpu'"
        ) from exc
    return pyrender


def gl_projection(
    fx: float, fy: float, cx: float, cy: float, width: int, height: int, znear: float, zfar: float
) -> Any:
    """(4, 4) float64 reversed-z projection for GL clip control ``GL_ZERO_TO_ONE`` (near -> 1, far -> 0).

    x/y rows are pyrender's ``IntrinsicsCamera`` convention (GL camera: x right, y up, looking down
    -z; ``cx``, ``cy`` in pixels from the left/top).
    """
    p = np.zeros((4, 4))
    p[0, 0] = 2.0 * fx / width
    p[1, 1] = 2.0 * fy / height
    p[0, 2] = 1.0 - 2.0 * cx / width
    p[1, 2] = 2.0 * cy / height - 1.0
    p[2, 2] = znear / (zfar - znear)
    p[2, 3] = znear * zfar / (zfar - znear)
    p[3, 2] = -1.0
    return p


class PyrenderBackend(RenderBackend):
    """OpenGL offscreen backend: one LOD mesh per prepared terrain, one draw per camera.

    The GL context is created on construction (lazily importing pyrender) and released by
    :meth:`close` (or the context manager).
    """

    name = "pyrender"
    rendered_modalities = (Modality.DEPTH, Modality.SILHOUETTE, Modality.SEMANTIC)
    #: Neighbouring positions share a pyramid; each draws its own finest level within
    #: ``RenderConfig.near_patch_cells`` DEM cells (:meth:`render_near`), since near the camera a
    #: neighbour's nodes sample the DEM elsewhere (4 % median depth difference within 200 m without
    #: it, on SRTM at 500 m offsets).
    terrain_reuse_m = 1500.0

    def __init__(self, config: RenderConfig, *, lod_base_m: float | None = None, tile_cells: int = 32) -> None:
        super().__init__(config)
        self._lod_base_m = lod_base_m
        self._tile_cells = tile_cells
        self._terrain: LocalTerrain | None = None
        self._mesh: TerrainMesh | None = None
        self._focus: npt.NDArray[np.float64] | None = None  # (2, 2) min/max of the meshed focus box
        self._gl: Any = None
        self._platform: Any = None
        self._program: Any = None
        self._vao: Any = None
        self._buffers: list[Any] = []
        self._cls_tex: Any = None
        self._lvl_geo: npt.NDArray[np.float64] | None = None  # (L, 3) x0, y0, spacing
        self._lvl_n: npt.NDArray[np.int32] | None = None  # (L, 2) nx, ny
        self._fbo: Any = None
        self._fbo_size: tuple[int, int] | None = None
        self._rbos: list[Any] = []
        #: The near patch's mesh state, swapped with the attributes above while it is drawn (:meth:`_swap`).
        self._near: dict[str, Any] = {a: None for a in _SLOT_ATTRS}
        self._near["_buffers"] = []
        self._near_pass: tuple[float, list[FrameCamera]] | None = None
        #: ``GL_RENDERER (OpenGL GL_VERSION)`` of the context: which device draws (a GPU or llvmpipe).
        self.gl_renderer: str | None = None
        #: ``GL_SUBPIXEL_BITS``: the rasteriser snaps vertices to ``2**-bits`` px (8 on llvmpipe and NVIDIA).
        self.subpixel_bits: int | None = None
        self._create_context()

    # ------------------------------------------------------------------------------------- context

    def _create_context(self) -> None:
        platform = self.config.gl_platform
        pyrender = _import_pyrender(platform)
        try:
            if platform == "egl":
                from pyrender.platforms import egl

                device = egl.get_device_by_index(int(os.environ.get("EGL_DEVICE_ID", "0")))
                self._platform = egl.EGLPlatform(self.config.size_px, self.config.size_px, device=device)
            else:
                from pyrender.platforms.osmesa import OSMesaPlatform

                self._platform = OSMesaPlatform(self.config.size_px, self.config.size_px)
            self._platform.init_context()
            self._platform.make_current()
            from OpenGL import GL
        except Exception as exc:  # EGL/OSMesa raise assorted errors (AssertionError, OSError, GLError)
            self._platform = None
            other = "osmesa" if platform == "egl" else "egl"
            raise BackendUnavailableError(
                f"cannot create an OpenGL context with gl_platform={platform!r} ({type(exc).__name__}: {exc}); "
                f"install Mesa's EGL/OSMesa libraries, or set gl_platform={other!r} in a fresh process, "
                "or use backend='cpu'"
            ) from exc
        self._gl = GL
        renderer, version = GL.glGetString(GL.GL_RENDERER).decode(), GL.glGetString(GL.GL_VERSION).decode()
        self.gl_renderer = f"{renderer} (OpenGL {version})"
        self.subpixel_bits = int(np.asarray(GL.glGetIntegerv(GL.GL_SUBPIXEL_BITS)).ravel()[0])
        logger.info("pyrender %s on %s: %s", pyrender.__version__, platform, self.gl_renderer)
        if not bool(GL.glClipControl):
            self.close()
            raise BackendUnavailableError(
                "OpenGL glClipControl (GL 4.5 / ARB_clip_control) is missing; use backend='cpu'"
            )
        self._program = self._build_program()

    def _build_program(self) -> Any:
        from OpenGL.GL import shaders

        vs = shaders.compileShader(_VERTEX_SHADER, self._gl.GL_VERTEX_SHADER)
        fs = shaders.compileShader(_FRAGMENT_SHADER, self._gl.GL_FRAGMENT_SHADER)
        return shaders.compileProgram(vs, fs, validate=False)

    def _ensure_fbo(self, width: int, height: int) -> None:
        gl = self._gl
        if self._fbo_size == (width, height):
            return
        self._delete_fbo()
        self._rbos = list(np.atleast_1d(gl.glGenRenderbuffers(3)))
        for rbo, fmt in zip(self._rbos, (gl.GL_R32F, gl.GL_R8UI, gl.GL_DEPTH_COMPONENT32F), strict=True):
            gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, rbo)
            gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, fmt, width, height)
        self._fbo = gl.glGenFramebuffers(1)
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self._fbo)
        for att, rbo in zip(
            (gl.GL_COLOR_ATTACHMENT0, gl.GL_COLOR_ATTACHMENT1, gl.GL_DEPTH_ATTACHMENT), self._rbos, strict=True
        ):
            gl.glFramebufferRenderbuffer(gl.GL_FRAMEBUFFER, att, gl.GL_RENDERBUFFER, rbo)
        status = gl.glCheckFramebufferStatus(gl.GL_FRAMEBUFFER)
        if status != gl.GL_FRAMEBUFFER_COMPLETE:
            raise BackendUnavailableError(f"OpenGL framebuffer (R32F + R8UI + DEPTH32F) incomplete: status {status}")
        self._fbo_size = (width, height)

    def _delete_fbo(self) -> None:
        gl = self._gl
        if self._fbo is not None:
            gl.glDeleteFramebuffers(1, [self._fbo])
            self._fbo = None
        if self._rbos:
            gl.glDeleteRenderbuffers(len(self._rbos), self._rbos)
            self._rbos = []
        self._fbo_size = None

    def _delete_mesh_buffers(self) -> None:
        gl = self._gl
        if self._buffers:
            gl.glDeleteBuffers(len(self._buffers), self._buffers)
            self._buffers = []
        if self._vao is not None:
            gl.glDeleteVertexArrays(1, [self._vao])
            self._vao = None
        if self._cls_tex is not None:
            gl.glDeleteTextures(1, [self._cls_tex])
            self._cls_tex = None

    def _delete_context(self) -> None:
        """Destroy our context only.

        pyrender's ``EGLPlatform.delete_context`` (also run by its ``__del__``) calls ``eglTerminate``
        on the display, which is shared by every EGL context of the process and would kill another
        live backend. So for EGL the context is destroyed directly and the platform's handles are
        cleared, which makes its ``__del__`` a no-op; the display stays initialised for the process.
        """
        if self.config.gl_platform != "egl":
            self._platform.delete_context()
            return
        from OpenGL import EGL

        display, context = self._platform._egl_display, self._platform._egl_context
        if display is not None and context is not None:
            EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
            EGL.eglDestroyContext(display, context)
        self._platform._egl_context = None
        self._platform._egl_display = None

    def close(self) -> None:
        """Free the GL buffers, program and context. Idempotent."""
        if self._platform is None:
            return
        try:
            self._platform.make_current()
            self._delete_mesh_buffers()
            self._swap()
            self._delete_mesh_buffers()
            self._swap()
            self._delete_fbo()
            if self._program is not None:
                self._gl.glDeleteProgram(self._program)
                self._program = None
        finally:
            self._delete_context()
            self._platform = None
            self._mesh = None
            self._terrain = None

    # ------------------------------------------------------------------------------------- terrain

    def prepare(self, terrain: LocalTerrain) -> None:
        """Mesh ``terrain`` around its frame origin (the block centre) and upload it once.

        A later camera farther than :meth:`_remesh_distance` from the meshed focus box triggers one
        re-mesh around the enlarged box, so full resolution always surrounds the cameras.
        """
        if self._platform is None:
            raise RenderError("PyrenderBackend is closed; open a new backend")
        self._terrain = terrain
        self._build_mesh(np.zeros((1, 2)))  # the frame origin is the block centre

    def _swap(self) -> None:
        """Exchange the main terrain's mesh state with the near patch's (:data:`_SLOT_ATTRS`)."""
        for a in _SLOT_ATTRS:
            mine = getattr(self, a)
            setattr(self, a, self._near[a])
            self._near[a] = mine

    def render_near(
        self,
        cameras: list[FrameCamera],
        modalities: tuple[Modality, ...],
        near: LocalTerrain,
        near_cameras: list[FrameCamera],
    ) -> ViewBatch:
        """:meth:`render` with a near patch: ``near`` (a pyramid around the cameras' position, range
        ``near.range_m``) is drawn within that distance of each camera (``near_cameras[i]`` is camera
        ``i`` in ``near``'s frame), the prepared terrain beyond it; one depth buffer decides visibility.

        The shared pyramid samples the DEM at its own nodes; under the camera that is another surface
        than the camera's own pyramid (metres in rough terrain), which the patch replaces.
        """
        if len(near_cameras) != len(cameras):
            raise RenderError(f"{len(cameras)} cameras but {len(near_cameras)} near-patch cameras")
        self._platform.make_current()
        self._swap()
        try:
            self._terrain = near
            self._build_mesh(np.zeros((1, 2)))
        finally:
            self._swap()
        self._near_pass = (float(near.range_m), near_cameras)
        try:
            return self.render(cameras, modalities)
        finally:
            self._near_pass = None

    def _remesh_distance(self) -> float:
        """A camera this far (m) outside the meshed focus box triggers a re-mesh around it: a quarter of
        ``lod_base_m`` (default ``DEFAULT_LOD_BASE_CELLS`` level-0 cells)."""
        if self._lod_base_m is not None:
            return float(self._lod_base_m) / 4.0
        from crosslocate.render.mesh import DEFAULT_LOD_BASE_CELLS

        return DEFAULT_LOD_BASE_CELLS * float(self._levels()[0].spacing_m) / 4.0

    def _levels(self) -> Any:
        if self._terrain is None:
            raise RenderError("no terrain prepared: call backend.prepare(terrain) before render()")
        return self._terrain.levels

    def _build_mesh(self, focus_xy: npt.NDArray[np.float64]) -> None:
        t0 = time.perf_counter()
        mesh = build_terrain_mesh(
            self._levels(), focus_xy, self.config.range_m, lod_base_m=self._lod_base_m, tile_cells=self._tile_cells
        )
        self._focus = np.stack([focus_xy.min(axis=0), focus_xy.max(axis=0)])
        self._upload(mesh)
        self._mesh = mesh
        logger.debug(
            "meshed terrain: %d faces, %d tiles in %.2f s",
            mesh.n_faces,
            mesh.tile_level.shape[0],
            time.perf_counter() - t0,
        )

    def _upload(self, mesh: TerrainMesh) -> None:
        gl = self._gl
        self._platform.make_current()
        self._delete_mesh_buffers()
        self._vao = gl.glGenVertexArrays(1)
        gl.glBindVertexArray(self._vao)
        self._buffers = list(np.atleast_1d(gl.glGenBuffers(3)))
        pos, lvl, idx = self._buffers
        gl.glBindBuffer(gl.GL_ARRAY_BUFFER, pos)
        gl.glBufferData(
            gl.GL_ARRAY_BUFFER, mesh.vertices.nbytes, np.ascontiguousarray(mesh.vertices), gl.GL_STATIC_DRAW
        )
        gl.glEnableVertexAttribArray(0)
        gl.glVertexAttribPointer(0, 3, gl.GL_FLOAT, gl.GL_FALSE, 12, ctypes.c_void_p(0))
        # skirt vertices take their tile's level (their class lookup is the one of the border above)
        vlevel = np.where(mesh.vertex_level >= 0, mesh.vertex_level, mesh.tile_level[mesh.vertex_tile])
        vlevel = np.ascontiguousarray(vlevel, np.uint8)
        gl.glBindBuffer(gl.GL_ARRAY_BUFFER, lvl)
        gl.glBufferData(gl.GL_ARRAY_BUFFER, vlevel.nbytes, vlevel, gl.GL_STATIC_DRAW)
        gl.glEnableVertexAttribArray(1)
        gl.glVertexAttribIPointer(1, 1, gl.GL_UNSIGNED_BYTE, 1, ctypes.c_void_p(0))
        gl.glBindBuffer(gl.GL_ELEMENT_ARRAY_BUFFER, idx)
        gl.glBufferData(
            gl.GL_ELEMENT_ARRAY_BUFFER, mesh.faces.nbytes, np.ascontiguousarray(mesh.faces), gl.GL_STATIC_DRAW
        )
        gl.glBindVertexArray(0)
        self._upload_classes()

    def _upload_classes(self) -> None:
        """The levels' class grids as one ``R8UI`` 2-D texture array (layer = level, padded to the largest)."""
        gl = self._gl
        levels = self._levels()
        if len(levels) > MAX_LEVELS:
            raise RenderError(f"the pyrender backend supports at most {MAX_LEVELS} pyramid levels, got {len(levels)}")
        shapes = np.array([np.asarray(lv.cls).shape for lv in levels])
        ny, nx = (int(v) for v in shapes.max(axis=0))
        limit = int(gl.glGetIntegerv(gl.GL_MAX_TEXTURE_SIZE))
        if max(nx, ny) > limit:
            raise RenderError(
                f"terrain level of {nx}x{ny} nodes exceeds the GL texture limit {limit}; use backend='cpu'"
            )
        data = np.zeros((len(levels), ny, nx), np.uint8)
        for k, lv in enumerate(levels):
            c = np.asarray(lv.cls, np.uint8)
            data[k, : c.shape[0], : c.shape[1]] = c
        self._cls_tex = gl.glGenTextures(1)
        gl.glActiveTexture(gl.GL_TEXTURE0)
        gl.glBindTexture(gl.GL_TEXTURE_2D_ARRAY, self._cls_tex)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 1)
        gl.glTexImage3D(
            gl.GL_TEXTURE_2D_ARRAY, 0, gl.GL_R8UI, nx, ny, len(levels), 0, gl.GL_RED_INTEGER, gl.GL_UNSIGNED_BYTE,
            np.ascontiguousarray(data),
        )  # fmt: skip
        for pname in (gl.GL_TEXTURE_MIN_FILTER, gl.GL_TEXTURE_MAG_FILTER):
            gl.glTexParameteri(gl.GL_TEXTURE_2D_ARRAY, pname, gl.GL_NEAREST)
        gl.glTexParameteri(gl.GL_TEXTURE_2D_ARRAY, gl.GL_TEXTURE_MAX_LEVEL, 0)
        self._lvl_geo = np.array([[lv.x0, lv.y0, lv.spacing_m] for lv in levels], np.float64)
        self._lvl_n = shapes[:, ::-1].astype(np.int32)  # (nx, ny)

    def _ensure_focus(self, cameras: list[FrameCamera]) -> None:
        """Re-mesh when a camera lies clearly outside the meshed focus box."""
        assert self._focus is not None  # set by prepare(); internal invariant, not input validation
        xy = np.array([c.position[:2] for c in cameras], dtype=np.float64)
        out = np.maximum(self._focus[0] - xy, 0.0) + np.maximum(xy - self._focus[1], 0.0)
        if float(np.hypot(out[:, 0], out[:, 1]).max()) > self._remesh_distance():
            focus = np.concatenate([self._focus, xy])
            logger.debug("camera outside the meshed focus box; re-meshing around %s", focus.min(0).tolist())
            self._build_mesh(focus)

    # ------------------------------------------------------------------------------------- render

    def render(self, cameras: list[FrameCamera], modalities: tuple[Modality, ...]) -> ViewBatch:
        """Render the cameras of the prepared terrain.

        Returns
        -------
        ViewBatch
            ``depth`` (N, H, W) float32 z-depth metres (sky ``SKY_DEPTH_M``); ``semantic`` (N, H, W)
            uint8 LandCover ids (sky ``SKY_CLASS``); ``silhouette`` (N, H, W) uint8 from the depth via
            :func:`crosslocate.datasets.derived.silhouette_from_depth`; only those requested.
        """
        if self._platform is None:
            raise RenderError("PyrenderBackend is closed; open a new backend")
        mods = self.requested(modalities)
        if self._mesh is None:
            self._levels()  # raises the 'call prepare' error
        if not cameras:
            return ViewBatch({m: np.zeros((0, 1, 1), modality_spec(m).dtype) for m in mods}, np.zeros(0, np.float32))
        sizes = {(c.height_px, c.width_px) for c in cameras}
        if len(sizes) != 1:
            raise RenderError(f"all cameras of one render() call must share a size, got {sorted(sizes)}")
        (h, w), n = sizes.pop(), len(cameras)
        self._ensure_focus(cameras)
        want_depth = Modality.DEPTH in mods or Modality.SILHOUETTE in mods
        want_cls = Modality.SEMANTIC in mods
        depth = np.empty((n, h, w), np.float32) if want_depth else None
        sem = np.empty((n, h, w), np.uint8) if want_cls else None
        times = np.empty(n, np.float32)
        self._platform.make_current()
        self._ensure_fbo(w, h)
        self._begin(w, h, want_depth, want_cls)
        near = self._near_pass
        for i, cam in enumerate(cameras):
            t0 = time.perf_counter()
            if near is None:
                self._draw(cam)
            else:
                self._draw(cam, cut_m=near[0])
                self._swap()
                self._bind_slot()
                self._draw(near[1][i], clear=False, range_m=near[0])
                self._swap()
                self._bind_slot()
            if depth is not None:
                depth[i] = self._read(self._gl.GL_COLOR_ATTACHMENT0, w, h, np.float32)
            if sem is not None:
                sem[i] = self._read(self._gl.GL_COLOR_ATTACHMENT1, w, h, np.uint8)
            times[i] = time.perf_counter() - t0
        self._gl.glBindVertexArray(0)
        arrays: dict[Modality, np.ndarray] = {}
        if depth is not None:
            depth[depth <= 0.0] = SKY_DEPTH_M
            if Modality.DEPTH in mods:
                arrays[Modality.DEPTH] = depth
            if Modality.SILHOUETTE in mods:
                from crosslocate.datasets.derived import silhouette_from_depth

                arrays[Modality.SILHOUETTE] = silhouette_from_depth(depth, self.config.silhouette_rel_jump)
        if sem is not None:
            arrays[Modality.SEMANTIC] = sem
        return ViewBatch({m: arrays[m] for m in mods}, times)

    def _begin(self, w: int, h: int, want_depth: bool, want_cls: bool) -> None:
        gl = self._gl
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self._fbo)
        gl.glDrawBuffers(
            2,
            [
                gl.GL_COLOR_ATTACHMENT0 if want_depth else gl.GL_NONE,
                gl.GL_COLOR_ATTACHMENT1 if want_cls else gl.GL_NONE,
            ],
        )
        gl.glViewport(0, 0, w, h)
        gl.glClipControl(gl.GL_LOWER_LEFT, gl.GL_ZERO_TO_ONE)
        gl.glEnable(gl.GL_DEPTH_TEST)
        gl.glDepthFunc(gl.GL_GREATER)
        gl.glDepthMask(gl.GL_TRUE)
        for cap in (gl.GL_CULL_FACE, gl.GL_BLEND, gl.GL_MULTISAMPLE, gl.GL_DITHER):
            gl.glDisable(cap)
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
        gl.glUseProgram(self._program)
        self._uniforms = {
            name: gl.glGetUniformLocation(self._program, name)
            for name in (
                "u_world_to_cam", "u_cam", "u_proj", "u_range2", "u_cut2", "u_cls", "u_lvl", "u_lvl_n", "u_lift"
            )
        }  # fmt: skip
        gl.glUniform1i(self._uniforms["u_cls"], 0)
        self._bind_slot()

    def _bind_slot(self) -> None:
        """Bind the current terrain's vertex array, class texture and level sizes."""
        gl = self._gl
        gl.glBindVertexArray(self._vao)
        gl.glActiveTexture(gl.GL_TEXTURE0)
        gl.glBindTexture(gl.GL_TEXTURE_2D_ARRAY, self._cls_tex)
        assert self._lvl_n is not None  # set with the mesh upload; internal invariant
        n = np.zeros((MAX_LEVELS, 2), np.int32)
        n[: self._lvl_n.shape[0]] = self._lvl_n
        gl.glUniform2iv(self._uniforms["u_lvl_n"], MAX_LEVELS, n)

    def _draw(self, cam: FrameCamera, *, clear: bool = True, cut_m: float = 0.0, range_m: float | None = None) -> None:
        """Draw the current terrain for ``cam``: fragments farther than ``range_m`` (default the
        config's range) or nearer than ``cut_m`` (horizontal metres) are discarded; ``clear`` first."""
        gl = self._gl
        k = intrinsics(cam.fov_deg, cam.width_px, cam.height_px)
        near, far = NEAR_PLANE_M, _FAR_FACTOR * self.config.range_m
        rng = float(self.config.range_m if range_m is None else range_m)
        gl.glUniform1f(self._uniforms["u_range2"], rng * rng)
        gl.glUniform1f(self._uniforms["u_cut2"], float(cut_m) ** 2)
        proj = gl_projection(k[0, 0], k[1, 1], k[0, 2], k[1, 2], cam.width_px, cam.height_px, near, far)
        rot = np.asarray(cam.rotation, dtype=np.float64)
        lift = self._lift(cam)
        pos = self._lifted_position(cam, lift)
        u = self._uniforms
        gl.glUniform3f(u["u_lift"], *lift.astype(np.float32).tolist())
        # GL matrices are column-major: pass transpose=GL_TRUE for our row-major numpy matrices.
        gl.glUniformMatrix3fv(u["u_world_to_cam"], 1, gl.GL_TRUE, rot.T.astype(np.float32))
        gl.glUniform3f(u["u_cam"], *pos.astype(np.float32).tolist())
        assert self._lvl_geo is not None  # internal invariant
        geo = np.zeros((MAX_LEVELS, 3), np.float32)
        # lattice origins relative to the camera (the fragment shader works in camera-relative metres)
        geo[: self._lvl_geo.shape[0]] = self._lvl_geo - np.array([pos[0], pos[1], 0.0])
        gl.glUniform3fv(u["u_lvl"], MAX_LEVELS, geo)
        gl.glUniformMatrix4fv(u["u_proj"], 1, gl.GL_TRUE, proj.astype(np.float32))
        if clear:
            gl.glClearBufferfv(gl.GL_COLOR, 0, np.zeros(4, np.float32))
            gl.glClearBufferuiv(gl.GL_COLOR, 1, np.array([SKY_CLASS, 0, 0, 0], np.uint32))
            gl.glClearBufferfv(gl.GL_DEPTH, 0, np.zeros(1, np.float32))
        for start, stop in self._visible_runs(cam, k, pos, lift):
            gl.glDrawElements(gl.GL_TRIANGLES, 3 * (stop - start), gl.GL_UNSIGNED_INT, ctypes.c_void_p(12 * start))

    def _lift(self, cam: FrameCamera) -> npt.NDArray[np.float64]:
        """(a, b, c): the refraction lift measured from the camera instead of the frame origin is the
        terrain's ``z + a x + b y + c`` (module docstring, "Shared terrain"); zeros at the origin."""
        k = float(getattr(self._terrain, "refraction_k", 0.0))  # 0 for bare level stacks (tests)
        if k == 0.0:
            return np.zeros(3)
        px, py = float(cam.position[0]), float(cam.position[1])
        g = k / float(self._terrain.radius_m)
        return np.array([-g * px, -g * py, 0.5 * g * (px * px + py * py)])

    @staticmethod
    def _lifted_position(cam: FrameCamera, lift: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The camera centre with the same correction as the terrain under it."""
        pos = np.array(cam.position, dtype=np.float64)
        pos[2] += lift[0] * pos[0] + lift[1] * pos[1] + lift[2]
        return pos

    def _visible_runs(
        self,
        cam: FrameCamera,
        k: npt.NDArray[np.float64],
        pos: npt.NDArray[np.float64] | None = None,
        lift: npt.NDArray[np.float64] | None = None,
    ) -> list[tuple[int, int]]:
        """Face ranges of the tiles that intersect the view frustum and range (merged when adjacent).

        ``pos`` / ``lift``: the lifted camera centre and the lift (:meth:`_lift`); the tiles' height
        ranges are widened by the largest lift change over them.
        """
        mesh = self._mesh
        assert mesh is not None  # internal invariant
        b, zr = mesh.tile_bounds, mesh.tile_zrange
        if pos is None:
            pos = np.asarray(cam.position, np.float64)
        if lift is not None and np.any(lift):
            corner = np.abs(b).reshape(-1, 2, 2).max(axis=1)  # (T, 2) largest |x|, |y| of each tile
            pad = np.abs(lift[0]) * corner[:, 0] + np.abs(lift[1]) * corner[:, 1] + abs(lift[2])
            zr = np.stack([zr[:, 0] - pad, zr[:, 1] + pad], axis=1)
        cx = np.stack([b[:, 0], b[:, 2]], 1)[:, [0, 1, 0, 1, 0, 1, 0, 1]]
        cy = np.stack([b[:, 1], b[:, 3]], 1)[:, [0, 0, 1, 1, 0, 0, 1, 1]]
        cz = zr[:, [0, 0, 0, 0, 1, 1, 1, 1]]
        rel = np.stack([cx, cy, cz], -1) - pos
        pc = rel @ np.asarray(cam.rotation, np.float64)  # (T, 8, 3) camera frame
        th = 1.02 * (cam.width_px / 2.0) / k[0, 0]
        tv = 1.02 * (cam.height_px / 2.0) / k[1, 1]
        x, y, z = pc[..., 0], pc[..., 1], pc[..., 2]
        out = (
            (z < NEAR_PLANE_M * 0.5).all(1)
            | (x > th * z).all(1)
            | (x < -th * z).all(1)
            | (y > tv * z).all(1)
            | (y < -tv * z).all(1)
        )
        dx = np.maximum(0.0, np.maximum(b[:, 0] - cam.position[0], cam.position[0] - b[:, 2]))
        dy = np.maximum(0.0, np.maximum(b[:, 1] - cam.position[1], cam.position[1] - b[:, 3]))
        out |= np.hypot(dx, dy) > self.config.range_m
        runs: list[tuple[int, int]] = []
        for t in np.flatnonzero(~out):
            s, e = int(mesh.tile_face_start[t]), int(mesh.tile_face_start[t + 1])
            if runs and runs[-1][1] == s:
                runs[-1] = (runs[-1][0], e)
            else:
                runs.append((s, e))
        return runs

    def _read(self, attachment: int, w: int, h: int, dtype: type) -> Any:
        gl = self._gl
        gl.glReadBuffer(attachment)
        buf = np.empty((h, w), dtype=dtype)
        if dtype is np.float32:
            gl.glReadPixels(0, 0, w, h, gl.GL_RED, gl.GL_FLOAT, buf)
        else:
            gl.glReadPixels(0, 0, w, h, gl.GL_RED_INTEGER, gl.GL_UNSIGNED_BYTE, buf)
        return buf[::-1]  # GL rows are bottom-up: flip once, here
