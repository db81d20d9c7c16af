# fastflow._core: the native core, one extension module built from the
# files included below (uvloop's layout), so that every part can call every
# other at C level.
#
# Only leaf modules of the package are imported: fastflow.errors (exception
# classes) and fastflow._attrs (CloudEvents attribute rules), both shared with
# the pure-Python reference core.

import os

from fastflow.errors import EventError, EventTooLarge, FastflowError, LogFullError, SubjectError

include "consts.pxi"
include "subjects.pxi"
include "buffers.pxi"
include "matcher.pxi"
include "log.pxi"

include "buffers.pyx"
include "subjects.pyx"
include "matcher.pyx"
include "log.pyx"
include "segments.pyx"
include "event.pyx"
include "codec.pyx"
include "router.pyx"
include "natsproto.pyx"

COMPILED = True
DEBUG = bool(FASTFLOW_DEBUG)
