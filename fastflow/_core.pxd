# fastflow._core's declarations: the C types of the core and the interface
# of every cdef class (its C attributes and cdef methods), one .pxd beside
# each .pyx in src_ext/ (uvloop's handles/*.pxd), so that a class can be read
# without scrolling its body.  Cython reads this file when it compiles
# src_ext/core.pyx as fastflow._core; the includes resolve in src_ext/
# (setup.py's include path).  Declaration order: a class after the classes
# its attributes and signatures name, but for the forward declarations below.

include "consts.pxi"
include "subjects.pxi"
include "buffers.pxi"
include "matcher.pxi"
include "log.pxi"
include "tail.pxi"
include "subindex.pxi"

cdef class Log
cdef class SegmentStore
cdef class Router

include "buffers.pxd"
include "matcher.pxd"
include "log.pxd"
include "segments.pxd"
include "tail.pxd"
include "event.pxd"
include "cejson.pxd"
include "cesql.pxd"
include "subindex.pxd"
include "wire/outbuf.pxd"
include "wire/native_out.pxd"
include "wire/nats_out.pxd"
include "wire/web_out.pxd"
include "wire/mqtt_out.pxd"
include "router.pxd"
include "wire/door.pxd"
include "wire/native_in.pxd"
include "wire/nats_in.pxd"
include "wire/mqtt_in.pxd"
include "wire/http_in.pxd"
